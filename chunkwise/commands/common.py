"""Flags shared by `chunkwise run` and `chunkwise plan`: the RunParams fields that decide which requests a
run sends, how they are chunked and what the answers depend on (each flag is the field name with dashes).
Kept here so both commands offer the same names, choices, help and defaults, and `plan` checks an input
exactly as `run` would."""

from __future__ import annotations

import argparse

from chunkwise.commands.flags import run_default, run_help

#: RunParams fields the shared flags set.
SHARED_FIELDS = ("id_column", "prompt_column", "limit", "model", "host", "api", "mode", "num_ctx", "chunk_size",
                 "chunk_token_budget", "trim_threshold", "parallel", "system_prompt", "system_prompt_file",
                 "num_predict", "expected_answer_tokens", "chars_per_token", "temperature", "seed")


def parallel_flag(value: str) -> int | str:
    """`--parallel`: a whole number, or `auto` (RunParams turns it into `parallel_auto`)."""
    if value.strip() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number or 'auto'") from None


def add_shared_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--input", dest="input_path", required=True, metavar="PATH",
        help="Parquet file of requests (columns id and prompt or messages, optional system) or an OpenAI Batch "
        "API input file (.jsonl)")
    add("--id-column", metavar="NAME", help=run_help("id_column", "input column holding the ids", "id"))
    add("--prompt-column", metavar="NAME",
        help=run_help("prompt_column", "input column holding the requests: strings are prompts, lists of "
                      "{role, content} are chats", "prompt, else messages"))
    add("--limit", type=int, metavar="N", help=run_help("limit", "send only the first N rows (a trial run)",
                                                         "every row"))
    add("--model", metavar="NAME",
        help=run_help("model", "model name as the server knows it (an Ollama tag, or an id of /v1/models); a "
                      "batch file without --model runs the model its lines name"))
    add("--api", choices=("ollama", "openai"),
        help=run_help("api", "the server's API: ollama (Ollama's /api/chat) or openai (/v1/chat/completions of "
                      "llama-server, vLLM, SGLang, LM Studio, Ollama's /v1, OpenAI)"))
    add("--host", metavar="URL",
        help=run_help("host", "the server's base URL", "CHUNKWISE_OLLAMA_HOST, OLLAMA_HOST, http://127.0.0.1:11434; "
                      "with --api openai CHUNKWISE_OPENAI_HOST, http://127.0.0.1:8080"))
    add("--mode", choices=("independent", "conversation"),
        help=run_help("mode", "independent: each request alone, system prompt first (prefix-cached); "
                      "conversation: one chat per chunk, each request a turn after the chunk's earlier ones"))
    add("--num-ctx", type=int, metavar="N",
        help=run_help("num_ctx", "context per server slot, tokens",
                      f"{run_default('num_ctx')}, or the server's own per-slot context where it fixes one "
                      "(llama-server), or the model's trained context where that is smaller"))
    add("--chunk-size", type=int, metavar="N",
        help=run_help("chunk_size", "requests per chunk", "floor(0.8 x (budget - system prompt tokens) / mean "
                      "tokens per request); budget: --chunk-token-budget (independent) or --num-ctx (conversation)"))
    add("--chunk-token-budget", type=int, metavar="N",
        help=run_help("chunk_token_budget", "independent mode: tokens of work per chunk when --chunk-size is "
                      "left out (a chunk is the unit of checkpoint and retry)"))
    add("--trim-threshold", type=float, metavar="X",
        help=run_help("trim_threshold", "conversation mode: drop the oldest turns when the context passes this "
                      "fraction of --num-ctx"))
    add("--parallel", type=parallel_flag, metavar="N|auto",
        help=run_help("parallel", "requests in flight; match the server's slots (OLLAMA_NUM_PARALLEL, "
                      "llama-server -np). auto: the count the server states (llama-server /props, SGLang); "
                      "Ollama and vLLM state none, so the run says so and keeps the default"))
    system = parser.add_mutually_exclusive_group()
    system.add_argument("--system-prompt", metavar="TEXT",
                        help=run_help("system_prompt", "system prompt for every request (a row's own `system` "
                                      "wins)", "none"))
    system.add_argument("--system-prompt-file", metavar="PATH", help="read the system prompt from this UTF-8 file")
    add("--num-predict", type=int, metavar="N",
        help=run_help("num_predict", "most tokens per answer (a batch file line's max_tokens wins for that line)"))
    add("--expected-answer-tokens", type=int, metavar="N",
        help=run_help("expected_answer_tokens", "mean answer length assumed for chunk sizing and the ETA, tokens"))
    add("--chars-per-token", type=float, metavar="X",
        help=run_help("chars_per_token", "characters per token of the token estimates"))
    add("--temperature", type=float, metavar="X",
        help=run_help("temperature", "sampling temperature (0: reproducible)"))
    add("--seed", type=int, metavar="N", help=run_help("seed", "sampling seed sent with every request"))
    add("--format-file", metavar="PATH", help="JSON schema file the answers must follow (structured outputs)")
