"""Flags shared by `chunkwise run` and `chunkwise plan`: the RunParams fields that decide how a run
is chunked and sent (each flag is the field name with dashes). Kept here so both commands offer the
same names, choices and help."""

from __future__ import annotations

import argparse

#: RunParams fields the shared flags set.
SHARED_FIELDS = ("model", "host", "mode", "num_ctx", "chunk_size", "parallel", "system_prompt", "system_prompt_file",
                 "num_predict", "expected_answer_tokens", "chars_per_token")


def add_shared_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", help="Ollama model tag (default llama3.1:8b)")
    add("--host", help="Ollama URL (default: CHUNKWISE_OLLAMA_HOST, OLLAMA_HOST, http://127.0.0.1:11434)")
    add("--mode", choices=("conversation", "independent"))
    add("--num-ctx", type=int, metavar="N", help="context window, tokens (sent on every request)")
    add("--chunk-size", type=int, metavar="N", help="requests per chunk (default: from the context budget)")
    add("--parallel", type=int, metavar="N", help="requests in flight; match OLLAMA_NUM_PARALLEL")
    system = parser.add_mutually_exclusive_group()
    system.add_argument("--system-prompt", metavar="TEXT", help="system prompt text")
    system.add_argument("--system-prompt-file", metavar="PATH", help="read the system prompt from this UTF-8 file")
    add("--num-predict", type=int, metavar="N", help="most tokens per answer")
    add("--expected-answer-tokens", type=int, metavar="N", help="mean answer length for chunk sizing")
    add("--chars-per-token", type=float, metavar="X", help="characters per token of the token estimates (default 4.0)")
