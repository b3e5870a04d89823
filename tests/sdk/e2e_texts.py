"""Texts shared by the end-to-end SDK scripts: long enough for the proxy's policy to compress
(plain ASCII, no quotes or backslashes, so their JSON form is the text itself)."""

SYSTEM = (
    "You are the operations assistant of Northwind Logistics. You help dispatchers plan deliveries, "
    "answer questions about shipments and explain delays to customers. Always check the shipment "
    "status before you answer, and never invent tracking numbers. When a delivery is late by more "
    "than two days, apologise and offer the customer a call back from the dispatch team. The "
    "warehouse in Rotterdam closes at 18:00 local time and the one in Hamburg at 20:00. Trucks leave "
    "every morning at 06:30. Our service level promises delivery within 48 hours inside Germany and "
    "within 72 hours for the Netherlands, Belgium and Luxembourg. Refunds are handled by the billing "
    "department and you must not promise them yourself. Keep answers short, friendly and precise, "
    "and use metric units."
)

# About 300 words of tool output.
TOOL_RESULT = (
    "Shipment NW-2231-XK was picked up in Rotterdam on Monday morning by the regional pickup team and "
    "scanned at the Duisburg hub on Monday evening, where it was sorted onto the northern line. On "
    "Tuesday it was loaded onto truck 14 for the Hamburg route, but the truck was held at the depot "
    "because of a brake inspection that took much longer than planned, since the mechanic on duty "
    "had to order a replacement part from the supplier in Essen. The dispatcher on the early shift "
    "decided to keep the load on the truck rather than unload it, because the inspection was first "
    "expected to finish before noon. When it became clear in the afternoon that the part would only "
    "arrive the next day, the parcel was transferred to truck 9 on Wednesday morning together with "
    "eleven other parcels for the same area. Truck 9 left the depot at 07:10 and reached the Hamburg "
    "warehouse on Wednesday night at 22:45, after a detour around a closed section of the A1 near "
    "Bremen. The warehouse team scanned the parcel at 23:02 and placed it in the outbound zone for "
    "the Altona district. Delivery to the customer is now scheduled for Thursday between 10:00 and "
    "14:00 with driver number 318, who usually covers that district. The customer was notified by "
    "e-mail at 21:14 on Wednesday and by text message at 07:30 on Thursday. No damage was reported "
    "during the transfer, the seal number 884213 matches the loading record, and the weight measured "
    "in Hamburg, 4.2 kilograms, is the same as the weight measured at pickup in Rotterdam. The "
    "delivery window was confirmed by the customer through the tracking page at 08:05, and a note "
    "was added asking the driver to leave the parcel with the neighbour at number 12 if nobody "
    "answers the door. The total delay against the promised service level is therefore about one "
    "day and six hours, which is below the two day limit for an automatic apology and call back."
)

QUESTION = "Why is my parcel NW-2231-XK late, and when will it arrive?"
