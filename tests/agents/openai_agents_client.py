"""One run of an agent of the OpenAI Agents SDK (`openai-agents`) with a function tool, against
`BASE_URL` (an OpenAI-compatible `/v1`) over the Responses API or Chat Completions. Prints the
agent's final output. Driven by tests/e2e/agent_clients.rs; fully offline: tracing is off (also by
`OPENAI_AGENTS_DISABLE_TRACING=1` in the environment the test gives it), the key is a dummy.

usage: openai_agents_client.py BASE_URL responses|chat
"""

import sys

from agent_texts import INSTRUCTIONS, PROMPT, TOOL_RESULT
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI


@function_tool
def shipment_status(query: str) -> str:
    """Looks up the tracking history of a shipment.

    Args:
        query: The shipment id, or the customer's question about it.
    """
    return TOOL_RESULT


def main() -> None:
    base_url, api = sys.argv[1], sys.argv[2]
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key="sk-agents-dummy", max_retries=0, timeout=60)
    if api == "responses":
        model = OpenAIResponsesModel(model="gpt-4.1", openai_client=client)
    else:
        model = OpenAIChatCompletionsModel(model="gpt-4.1", openai_client=client)
    agent = Agent(
        name="Dispatch assistant",
        instructions=INSTRUCTIONS,
        tools=[shipment_status],
        model=model,
    )
    result = Runner.run_sync(agent, PROMPT, max_turns=4)
    print(result.final_output)


if __name__ == "__main__":
    main()
