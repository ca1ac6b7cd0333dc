"""Chat templates of the simulated model families: the tokens around each message, the BOS token and
the tokens that open the assistant's turn (the client must not import these).

Each family renders like the real template of its models; the message contents are tokenized by
`tokenizer.tokenize`. Per message / generation prompt / BOS:

    llama3   5 / 4 / 1   `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>` (Llama 3.x)
    gemma    5 / 3 / 1   `<start_of_turn>user\\n...<end_of_turn>\\n`, turns `user`/`model`, a system message
                          is a user turn (the gemma3-270m Modelfile of chunkwise/harness/ollama_server;
                          measured on Ollama 0.24.0: an empty user message costs 9 tokens = 1 + 5 + 3)
    chatml   5 / 3 / 0   `<|im_start|>role\\n...<|im_end|>\\n` (Qwen 2.5 and 3)
    harmony  4 / 2 / 0   `<|start|>role<|message|>...<|end|>` (gpt-oss)

`template_text` and `stop` are what /api/show reports (`template`, `parameters`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chunkwise.harness.sim.tokenizer import tokenize


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    head: tuple[str, ...]  # before the role
    after_role: tuple[str, ...]
    tail: tuple[str, ...]  # after the content
    generation: tuple[str, ...]
    bos: str | None
    template_text: str
    stop: tuple[str, ...]
    #: Role names as the template writes them (others pass through).
    roles: tuple[tuple[str, str], ...] = ()

    def role(self, role: str) -> str:
        return dict(self.roles).get(role, role)

    def message(self, role: str, content_tokens: Iterable[str]) -> list[str]:
        """One rendered message: the template tokens around its content tokens."""
        return [*self.head, self.role(role), *self.after_role, *content_tokens, *self.tail]

    @property
    def message_overhead(self) -> int:
        return len(self.head) + 1 + len(self.after_role) + len(self.tail)

    @property
    def parameters(self) -> str:
        """/api/show `parameters`: one `stop` line per marker, as Ollama formats them (`%-30s %#v`)."""
        return "\n".join(f'{"stop":<30} "{marker}"' for marker in self.stop)


LLAMA3 = ChatTemplate(
    name="llama3", head=("<|start_header_id|>",), after_role=("<|end_header_id|>", "\n\n"), tail=("<|eot_id|>",),
    generation=("<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"), bos="<|begin_of_text|>",
    template_text=(
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    stop=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)
GEMMA = ChatTemplate(
    name="gemma", head=("<start_of_turn>",), after_role=("\n",), tail=("<end_of_turn>", "\n"),
    generation=("<start_of_turn>", "model", "\n"), bos="<bos>",
    template_text=(
        '{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 }}\n'
        '{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user\n{{ .Content }}<end_of_turn>\n'
        '{{ if $last }}<start_of_turn>model\n{{ end }}\n{{- else if eq .Role "assistant" }}<start_of_turn>model\n'
        '{{ .Content }}{{ if not $last }}<end_of_turn>\n{{ end }}\n{{- end }}\n{{- end }}'),
    stop=("<end_of_turn>",), roles=(("system", "user"), ("assistant", "model")),
)
CHATML = ChatTemplate(
    name="chatml", head=("<|im_start|>",), after_role=("\n",), tail=("<|im_end|>", "\n"),
    generation=("<|im_start|>", "assistant", "\n"), bos=None,
    template_text=("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                   "<|im_start|>assistant\n"),
    stop=("<|im_start|>", "<|im_end|>"),
)
HARMONY = ChatTemplate(
    name="harmony", head=("<|start|>",), after_role=("<|message|>",), tail=("<|end|>",),
    generation=("<|start|>", "assistant"), bos=None,
    template_text=("{{- range .Messages }}<|start|>{{ .Role }}<|message|>{{ .Content }}<|end|>{{ end }}"
                   "<|start|>assistant"),
    stop=("<|start|>", "<|end|>", "<|return|>", "<|call|>"),
)
TEMPLATES = {t.name: t for t in (LLAMA3, GEMMA, CHATML, HARMONY)}


def render_chat(messages: Iterable[Mapping[str, object]], density: float = 1.0,
                template: ChatTemplate = LLAMA3) -> list[str]:
    """The token sequence of a chat prompt: BOS (if the family has one), each message, the generation prompt."""
    out: list[str] = [template.bos] if template.bos else []
    for message in messages:
        out += template.message(str(message.get("role", "user")), tokenize(str(message.get("content") or ""), density))
    out.extend(template.generation)
    return out


def chat_prompt_tokens(messages: Iterable[Mapping[str, object]], density: float = 1.0,
                       template: ChatTemplate = LLAMA3) -> int:
    """Length of `render_chat(messages, density, template)` without building the list."""
    total = len(template.generation) + (1 if template.bos else 0)
    for message in messages:
        total += template.message_overhead + len(tokenize(str(message.get("content") or ""), density))
    return total
