from distillery.runtime.service import serve
from distillery_judge.app import build

serve("judge", build)
