"""The models vectors were made by."""

from __future__ import annotations

import json
from typing import Any

from xmr.catalogue.rows import now_iso
from xmr.catalogue.settings import SettingsTable


class ModelsTable(SettingsTable):
    """The ``models`` table."""

    def ensure_model(self, info: Any, spec: str | None) -> None:
        """Record a model (xmr.encoders.base.ModelInfo); call inside a transaction."""
        self.conn.execute(
            "INSERT OR IGNORE INTO models (id, space, spec, name, pretrained, checkpoint_sha256, dim,"
            " preprocessing, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                info.model_id,
                info.space,
                spec,
                info.name,
                info.pretrained,
                info.checkpoint_sha256,
                info.dim,
                json.dumps(info.preprocessing, sort_keys=True, default=str),
                now_iso(),
            ),
        )

    def model_row(self, model_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            return None
        cols = [d[0] for d in self.conn.execute("SELECT * FROM models LIMIT 0").description]
        out = dict(zip(cols, row, strict=True))
        out["preprocessing"] = json.loads(out["preprocessing"] or "{}")
        return out

    def models(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM models ORDER BY space, created")]
        out = []
        for model_id in ids:
            row = self.model_row(model_id)
            assert row is not None
            row["active"] = self.active_model(row["space"]) == model_id
            row["vectors"] = self.conn.execute(
                "SELECT COUNT(*) FROM vectors WHERE model_id = ?", (model_id,)
            ).fetchone()[0]
            out.append(row)
        return out
