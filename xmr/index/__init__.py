"""``xmr index`` as steps: plan, decode, embed, commit, finish (docs/architecture-index.md)."""
