"""The agents: the tmux pool, its sessions' tmux side, launching Claude Code and its hooks' settings."""
