"""Training runs: the training loop (``trainer``), optimizer and schedule (``optim``), GradCache (``grad_cache``),
checkpoints and resume (``checkpoint``), activation-memory planning (``memory``), multi-stage chains (``chain``) and
checkpoint merging (``merge``). A new training objective is a loss in ``l2e/losses/`` plus its config fields; a new
way to schedule or stage training goes here."""
