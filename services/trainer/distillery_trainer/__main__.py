from distillery.runtime.service import serve
from distillery_trainer.app import build

serve("trainer", build)
