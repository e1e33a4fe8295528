"""One process of ``tests/test_distributed_evaluation.py``'s sharing test, started by torchrun (gloo).

``python -m torch.distributed.run --nproc_per_node=N tests/distributed_evaluation_worker.py MODEL BROKEN OUT``:
scores the prompts of ``SCORED`` with every shared scoring helper inside ``distributed.sharing`` and saves, per
rank, what it returned and how many forward passes this process ran (``OUT/rank<r>.pt``); then scores
``POISONED`` on ``BROKEN`` (a model whose ``~`` embeds to inf) and saves the error each process raised. With
N=1 the same script, outside any world, gives the one-process reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

#: prompts of different lengths, so that the length-sorted batches differ in width
SCORED = ["The Black man walked into the room and", "A white woman works at the school as a",
          "The Asian student was very", "My Arab neighbour is known as a", "The doctor said that the",
          "A nurse told me", "He was", "The Hispanic family next door moved here and"]
#: the shortest prompt holds the poisoned token: it is scored in the last batch, the last process's share
POISONED = [*SCORED[:5], "a ~ b"]
CHOICES = [["kind", "rude", "late"], ["teacher", "cook", "nurse"], ["tall", "short", "quiet"],
           ["friend", "doctor", "baker"], ["patient", "nurse", "doctor"], ["a", "b", "c"], ["here", "there", "x"],
           ["left", "stayed", "sang"]]


def main(model_dir: str, broken_dir: str, out: str) -> None:
    from fairprune.core.io.sources import load_model
    from fairprune.core.model.benchmark_scoring import choice_logprobs, sentence_logprobs
    from fairprune.core.model.distributed import init_from_env, map_shared, sharing, shutdown
    from fairprune.core.model.lm_scoring import encode, last_token_logprobs, pad_id, score_continuations

    world = init_from_env()
    rank = 0 if world is None else world.rank
    model, tok = load_model(model_dir)
    forwards = [0]
    model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    requests = [(encode(tok, p), encode(tok, " and then", special=False)) for p in SCORED]
    # every prompt followed by each of its choices: the prompts are run once, the choices continued from the cache
    shared = [(encode(tok, p), encode(tok, " " + c, special=False)) for p, options in zip(SCORED, CHOICES)
              for c in options]
    with sharing(world):
        got = {
            "next_token": last_token_logprobs(model, tok, SCORED, batch_size=2),
            "continuations": [(s.nll, s.n_tokens, s.greedy) for s in score_continuations(model, requests, 2,
                                                                                         pad_id(tok))],
            "shared_context": [(s.nll, s.n_tokens, s.greedy) for s in score_continuations(model, shared, 2,
                                                                                          pad_id(tok))],
            "choices": [[(s.logprob, s.n_tokens) for s in row] for row in choice_logprobs(model, tok, SCORED,
                                                                                           CHOICES, 2)],
            "sentences": [(s.logprob, s.n_tokens) for s in sentence_logprobs(model, tok, SCORED, 3)],
            "mapped": map_shared(len(SCORED), lambda mine: [(i, SCORED[i].upper()) for i in mine]),
        }
    got["forwards"] = forwards[0]
    broken, _ = load_model(broken_dir)
    with sharing(world):
        try:
            last_token_logprobs(broken, tok, POISONED, batch_size=2)
            got["error"] = None
        except Exception as exc:  # noqa: BLE001 - the test reads which error each process raised
            got["error"] = f"{type(exc).__name__}: {exc}"
    torch.save(got, Path(out) / f"rank{rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
