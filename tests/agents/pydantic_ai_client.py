"""One run of a Pydantic AI agent (`pydantic-ai-slim[openai]`) with a function tool, against
`BASE_URL` (an OpenAI-compatible `/v1`) over Chat Completions or the Responses API. Prints the
agent's output. Driven by tests/e2e/agent_clients.rs; fully offline: no instrumentation (logfire is
not installed and `Agent.instrument_all` is never called), the key is a dummy.

usage: pydantic_ai_client.py BASE_URL chat|responses
"""

import sys

from agent_texts import INSTRUCTIONS, PROMPT, TOOL_RESULT
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider


def main() -> None:
    base_url, api = sys.argv[1], sys.argv[2]
    client = AsyncOpenAI(base_url=base_url, api_key="sk-pydantic-dummy", max_retries=0, timeout=60)
    provider = OpenAIProvider(openai_client=client)
    if api == "responses":
        model = OpenAIResponsesModel("gpt-4o-mini", provider=provider)
    else:
        model = OpenAIChatModel("gpt-4o-mini", provider=provider)
    agent = Agent(model, instructions=INSTRUCTIONS)

    @agent.tool_plain
    def shipment_status(query: str) -> str:
        """Looks up the tracking history of a shipment.

        Args:
            query: The shipment id, or the customer's question about it.
        """
        return TOOL_RESULT

    result = agent.run_sync(PROMPT)
    print(result.output)


if __name__ == "__main__":
    main()
