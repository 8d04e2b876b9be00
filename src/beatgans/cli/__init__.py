from beatgans.cli import rundirs as _rundirs  # noqa: F401  registers ${beatgans_run_id:} for conf/hydra
from beatgans.cli import wandb_names as _wandb_names  # noqa: F401  registers ${beatgans_wandb_name:} and _group
