"""The UI's pages: one module each (``dash.register_page``, its layout and its callbacks)."""
