from distillery.runtime.service import serve
from distillery_teacher.app import build

serve("teacher", build)
