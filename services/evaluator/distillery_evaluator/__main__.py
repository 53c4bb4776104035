from distillery.runtime.service import serve
from distillery_evaluator.app import build

serve("evaluator", build)
