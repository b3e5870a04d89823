"""The texts the Python agents of tests/e2e/agent_clients.rs send: an operator's system prompt, the
user's task, and what their one function tool answers (long enough, over 200 tokens of prose, for
the proxy's default tool-result budget to compress it)."""

INSTRUCTIONS = """You are the operations assistant of Northwind Logistics. You help dispatchers \
plan deliveries, answer questions about shipments and explain delays to customers.

# Rules
- Always call `shipment_status` before you answer a question about a shipment, and never invent \
tracking numbers, dates or seal numbers.
- When a delivery is late by more than two days, apologise and offer the customer a call back \
from the dispatch team.
- Refunds are handled by the billing department: never promise one yourself.
- The warehouse in Rotterdam closes at 18:00 local time and the one in Hamburg at 20:00. Trucks \
leave every morning at 06:30.
- Our service level promises delivery within 48 hours inside Germany and within 72 hours for the \
Netherlands, Belgium and Luxembourg.

# Style
Keep answers short, friendly and precise, use metric units, and quote the shipment id exactly \
as the customer wrote it (for example `NW-2231-XK`)."""

PROMPT = "Why is my parcel NW-2231-XK late, and when will it arrive?"

TOOL_RESULT = """Shipment NW-2231-XK was picked up in Rotterdam on Monday morning and scanned at \
the Duisburg hub on Monday evening, where it waited for the overnight connection because the \
afternoon trailer had already been sealed. On Tuesday it was loaded onto truck 14 for the Hamburg \
route, but the truck was held at the depot because of a brake inspection that took much longer \
than the workshop had planned, and the replacement parts only arrived in the late afternoon. The \
parcel was transferred to truck 9 on Wednesday morning together with eleven other parcels for \
the same route, and it reached the Hamburg warehouse on Wednesday night shortly before the late \
shift ended. During the transfer the driver confirmed that the outer packaging was intact and \
that the seal number 884213 matched the loading record from Rotterdam. Delivery to the customer \
is now scheduled for Thursday between 10:00 and 14:00, with the same courier who usually serves \
that district, and the customer was notified by e-mail at 21:14 on Wednesday with the new time \
window and a link to change the delivery address if nobody is at home. No damage was reported, \
no customs documents are needed for this route, and the shipment is insured up to its declared \
value of 340 euros. The dispatch team has flagged the delay in the weekly report so that the \
brake inspections of the Hamburg trucks are scheduled outside the loading hours from now on."""
