"""``jido.ai``: LLM agents — models, a durable tool-calling loop, approvals, budgets, MCP.

::

    from jido.ai import LLMAgent, OpenAIModel

    class Teller(LLMAgent):
        state_model = AccountState
        actions = [Deposit]
        model = OpenAIModel(base_url="http://127.0.0.1:8000/v1", model="m", api_key="k")
        instructions = "You run a bank account."

See ``docs/ai.md``. The test kit (a scripted model, a local OpenAI-compatible server) is in
``jido.ai.testing``; MCP (serve a runtime, use an MCP server's tools) in ``jido.ai.mcp``.
"""

from jido.ai._agent import (
    APPROVAL,
    APPROVAL_REQUESTED,
    PROMPT,
    RESUME,
    TEXT_DELTA,
    AIState,
    LLMAgent,
    arguments_sha256,
)
from jido.ai._anthropic import AnthropicModel
from jido.ai._errors import (
    ApprovalDeniedError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalMismatchError,
    ApprovalPendingError,
    ApprovalReplayedError,
    BudgetExceededError,
    ModelError,
    OutcomeUnknownError,
)
from jido.ai._http import HTTPModel
from jido.ai._openai import OpenAIModel
from jido.ai._routes import AgentRouteTools, RouteTools, class_route_tools, route_tool_name
from jido.ai._sources import SourceTool, TokenBudget, ToolSource
from jido.ai._types import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    # the agent
    "AIState",
    "LLMAgent",
    "arguments_sha256",
    # signal types
    "APPROVAL",
    "APPROVAL_REQUESTED",
    "PROMPT",
    "RESUME",
    "TEXT_DELTA",
    # models
    "AnthropicModel",
    "HTTPModel",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "OpenAIModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    # tools and budgets
    "AgentRouteTools",
    "RouteTools",
    "class_route_tools",
    "route_tool_name",
    "SourceTool",
    "TokenBudget",
    "ToolSource",
    # errors
    "ApprovalDeniedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalMismatchError",
    "ApprovalPendingError",
    "ApprovalReplayedError",
    "BudgetExceededError",
    "ModelError",
    "OutcomeUnknownError",
]
