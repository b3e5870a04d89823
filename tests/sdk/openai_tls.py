"""The official `openai` SDK over HTTPS to the proxy's TLS listener, trusting the test CA.

Usage: openai_tls.py BASE_URL CA_PEM. Prints one JSON object: the answer, the HTTP version
httpx negotiated, and a streamed answer's text.
"""

import json
import sys

import openai

try:  # openai 3.x builds on httpx2; earlier releases on httpx
    import httpx2 as httpx
except ImportError:
    import httpx


def main() -> None:
    base_url, ca = sys.argv[1], sys.argv[2]
    with httpx.Client(verify=ca, http2=False) as http_client:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", http_client=http_client)
        messages = [{"role": "user", "content": "Say hello over TLS."}]
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
        answer = raw.parse()
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    print(
        json.dumps(
            {
                "answer": answer.choices[0].message.content,
                "http_version": raw.http_response.http_version,
                "streamed": streamed,
            }
        )
    )


if __name__ == "__main__":
    main()
