from distillery.runtime.service import checkpoint_of, main
from distillery_editor.app import build
from distillery_editor.bootstrap import bootstrap
from distillery_editor.handlers import checkpoints_of, editor_fold

main("editor", build, checkpoint_of(bootstrap, editor_fold, checkpoints_of))
