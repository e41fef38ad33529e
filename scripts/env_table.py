"""Print the README's table of environment variables from paynow_service.config.VARIABLES."""

from __future__ import annotations

from paynow_service.config import VARIABLES


def table() -> str:
    rows = ["| variable | default | allowed | read by |", "|---|---|---|---|"]
    for var in VARIABLES:
        default = f"`{var.default}`" if var.default else "(empty)"
        rows.append(f"| `{var.name}` | {default} | {var.allowed} | {var.commands} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
