from distillery.runtime.service import serve
from distillery_editor.app import build

serve("editor", build)
