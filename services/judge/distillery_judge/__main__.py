from distillery.runtime.service import checkpoint_of, main
from distillery_judge.app import build
from distillery_judge.bootstrap import bootstrap
from distillery_judge.checkpoints import judged_fold, store_of

main("judge", build, checkpoint_of(bootstrap, judged_fold, store_of))
