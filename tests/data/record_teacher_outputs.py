"""Records real teacher outputs on example tasks, for the editor's pathway tests.

    .venv/bin/python tests/data/record_teacher_outputs.py   # writes tests/data/teacher_outputs.jsonl

Both example teachers (SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B-Instruct, greedy, CPU) answer the
first three training tasks of tool_call, tool_boundary and math_steps with each unit's system
prompt, exactly as the teacher service asks them. The file is committed: tests read it, they do
not regenerate it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distillery.contracts.events import Task
from distillery.contracts.spec import load_spec
from distillery.domain.backends import make_backend
from distillery.domain.prompts import system_prompt
from distillery_cli.workload import build_workload

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("tool_call", "tool_boundary", "math_steps")


def main() -> None:
    spec = load_spec(ROOT / "examples" / "spec.yaml")
    tasks = [Task.model_validate(line) for line in build_workload(3, 0) if line["unit"] in UNITS]
    rows = []
    for teacher_id in ("qwen-coder", "smollm2"):
        teacher = spec.teachers[teacher_id]
        backend = make_backend(teacher, teacher_id)
        requests = [(t.task_id, system_prompt(spec.units[t.unit], t), t.prompt) for t in tasks]
        max_new = max(spec.units[t.unit].routing.max_new_tokens or teacher.max_new_tokens for t in tasks)
        for task, gen in zip(tasks, backend.generate(requests, max_new)):
            rows.append({"task": task.model_dump(mode="json"), "teacher_id": teacher_id, "text": gen.text,
                         "confidence": gen.mean_token_prob, "finish_reason": gen.finish_reason})
    out = Path(__file__).with_name("teacher_outputs.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} outputs to {out}")


if __name__ == "__main__":
    main()
