"""What the Constructor asks of the cluster, each a function of a ``TitanClient`` (pages run them through
``ui.data.current().call``, on the UI's one client): drafts in the shared store, uploaded scripts, deploy.

Drafts are JSON under ``ui/drafts/<name>`` in the store's ordinary KV (shared by every user of the
cluster, kept across restarts by the store's AOF). Scripts are assets (what ``titan upload`` makes);
a deployed job carries its script inline (``file`` + content), as ``titan run`` sends it, so it runs on
any worker whatever its disk holds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from client.api import TitanClient
from titan_zmq import keys
from titan_zmq.errors import InvalidRequest
from titan_zmq.jobspec import check_name
from ui.constructor import codegen
from ui.constructor.draft import Report, check, clean

DRAFTS = "ui/drafts/"
ARTIFACTS = "runs/"  # assets jobs published for their run: results, not scripts to choose from
MAX_DRAFT_BYTES = 1024 * 1024  # a draft is a few KiB; more is not a draft


def draft_key(name: str) -> str:
    check_name(name, "draft name")
    return f"{DRAFTS}{name}"


def list_drafts(c: TitanClient) -> list[str]:
    return [k[len(DRAFTS):] for k in c.store_keys(DRAFTS)]


def save_draft(c: TitanClient, draft: dict[str, Any]) -> str:
    """Save under the pipeline's name (replacing a draft of that name); returns the name."""
    name = str(draft.get("name") or "")
    text = json.dumps(clean(draft), separators=(",", ":"))
    if len(text) > MAX_DRAFT_BYTES:
        raise InvalidRequest(f"draft {name!r}: {len(text)} bytes, over {MAX_DRAFT_BYTES}")
    c.store_put(draft_key(name), text)
    return name


def load_draft(c: TitanClient, name: str) -> dict[str, Any] | None:
    value = c.store_get(draft_key(name))
    if value is None:
        return None
    try:
        return clean(json.loads(value))
    except ValueError:
        raise InvalidRequest(f"draft {name!r} is not a draft (not JSON)") from None


def delete_draft(c: TitanClient, name: str) -> bool:
    return c.store_delete(draft_key(name))


def list_scripts(c: TitanClient) -> list[str]:
    """Uploaded files (assets) one may run, artifacts of runs left out."""
    return [name for k in c.store_keys(keys.ASSET) if not (name := k[len(keys.ASSET):]).startswith(ARTIFACTS)]


def upload_script(c: TitanClient, name: str, content: bytes) -> str:
    """Upload a script from the page as the asset ``name`` (its file name, as ``titan upload`` would)."""
    if not name or "/" in name or name.startswith(".") or name.startswith(ARTIFACTS):
        raise InvalidRequest(f"{name!r} is not a file name to upload a script under")
    with tempfile.TemporaryDirectory(prefix="titan-ui-upload-") as tmp:
        path = Path(tmp) / "script"
        path.write_bytes(content)
        return c.upload_file(path, name)


def deploy(c: TitanClient, draft: dict[str, Any]) -> str:
    """Check the draft, fetch its scripts, submit it as one run; returns the run id."""
    report = check(draft, scripts=set(list_scripts(c)))
    refuse(report)
    maps = codegen.jobs(draft, report)
    with tempfile.TemporaryDirectory(prefix="titan-ui-deploy-") as tmp:
        for name in codegen.scripts(maps):
            dest = Path(tmp) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            c.download_asset(name, dest)
        run = c.submit_dag(str(draft["name"]), codegen.titan_jobs(maps), agent_run_id=draft.get("agent_run_id") or None,
                           base_dir=tmp)
    return run.run_id


def refuse(report: Report) -> None:
    """InvalidRequest with the first problem (and how many more) unless the draft is valid."""
    if not report.ok:
        problems = report.problems()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidRequest(problems[0] + more)
