from distillery.runtime.service import serve
from distillery_router.app import build

serve("router", build)
