"""The data a model and the loop exchange: messages, tool specs, tool calls, usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "TextCallback",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Message = dict[str, Any]
"""One conversation message, provider-neutral:

* ``{"role": "user", "content": str}``
* ``{"role": "assistant", "content": str | None, "tool_calls": [ToolCall.to_dict(), ...]}``
* ``{"role": "tool", "tool_call_id": str, "name": str, "content": str, "is_error": bool}``
"""

TextCallback = Callable[[str], Awaitable[None] | None]
"""Receives pieces of the model's text as they stream in."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as offered to a model: name, description, JSON Schema of its arguments.

    ``strict`` says the schema follows OpenAI strict-mode rules (true for actions).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = True


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        """The plain-data form kept in messages and journals."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a model call used (as the provider reported them)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    def to_dict(self) -> dict[str, int]:
        """``{"input_tokens", "output_tokens", "total_tokens"}``."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One call to a model: instructions, the conversation so far, the tools offered.

    ``on_text`` (optional) asks for streaming: it receives the text as it arrives.
    """

    messages: Sequence[Message]
    system: str | None = None
    tools: Sequence[ToolSpec] = ()
    max_tokens: int | None = None
    on_text: TextCallback | None = None


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """What the model answered: text and/or tool calls, with the usage of the call."""

    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    stop_reason: str | None = None

    def message(self) -> Message:
        """The assistant message this response adds to the conversation."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        return msg


@runtime_checkable
class Model(Protocol):
    """A chat model with tool calling. ``OpenAIModel``, ``AnthropicModel`` and
    ``jido.ai.testing.ScriptedModel`` implement it; so can any object with ``complete``."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request (raise :class:`~jido.ai.ModelError` when it cannot)."""
        ...
