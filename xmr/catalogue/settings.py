"""Key-value settings (the active model of each space among them)."""

from __future__ import annotations

from xmr.catalogue.connection import CatalogueBase


class SettingsTable(CatalogueBase):
    """The ``settings`` table."""

    def get_setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def active_model(self, space: str) -> str | None:
        return self.get_setting(f"active_model.{space}")
