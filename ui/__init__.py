"""The Plotly Dash UI (`titan-ui`); arrives with the UI issue."""
