"""Input texts for the LLMLingua v1 / LongLLMLingua goldens (causal small model) and part of the
training corpus of the tiny GPT-2 / Llama tokenizers (tools/build_tiny_causal.py).

Everything here is written for this project or generated from templates with a seeded RNG.
"""

import random

import golden_texts as gt

GSM_DEMOS = [
    gt.MATH,
    gt.MATH2,
    "Question: A bakery sells 45 muffins in the morning and 38 muffins in the afternoon. Each "
    "muffin costs $2.50. The bakery spends $60 on ingredients. How much profit does it make?\n"
    "Let's think step by step\n"
    "The bakery sells 45 + 38 = 83 muffins.\n"
    "The money from the muffins is 83 * 2.50 = 207.50 dollars.\n"
    "The profit is 207.50 - 60 = 147.50 dollars.\n"
    "The answer is 147.50",
    "Question: Tom reads 25 pages every weekday and 40 pages on each day of the weekend. His book "
    "has 365 pages. After two full weeks, how many pages does he still have to read?\n"
    "Let's think step by step\n"
    "In one week he reads 5 * 25 = 125 pages on weekdays.\n"
    "On the weekend he reads 2 * 40 = 80 pages.\n"
    "So one week gives 125 + 80 = 205 pages, and two weeks give 2 * 205 = 410 pages.\n"
    "That is more than 365, so he finishes the book and has 0 pages left.\n"
    "The answer is 0",
    "Question: A school has 6 classes with 28 students each. For a trip, every bus holds 45 "
    "students and each teacher looks after 12 students. How many buses and how many teachers "
    "are needed?\n"
    "Let's think step by step\n"
    "There are 6 * 28 = 168 students.\n"
    "168 / 45 = 3.73, so the school needs 4 buses.\n"
    "168 / 12 = 14, so the school needs 14 teachers.\n"
    "The answer is 4 buses and 14 teachers",
]

RAG_QUESTION = "Which river flows through the city of Veloria?"
RAG_DOCS = [
    "Document [1](Title: Harbor of Miren) The harbor of Miren was built in 1832 and handles "
    "grain, timber and fish. It is the largest port on the northern coast.",
    "Document [2](Title: Mount Ostra) Mount Ostra rises 2,410 meters above sea level. Hikers "
    "usually reach the summit in two days from the village of Tesk.",
    "Document [3](Title: Veloria) Veloria is the capital of the Ardent province. The river Sela "
    "flows through the city of Veloria, and its old bridges date from the 14th century.",
    "Document [4](Title: Glass making) Glass making in the region started in the 1700s. The "
    "workshops used sand from the dunes near the coast.",
    "Document [5](Title: Ardent province) The Ardent province has about 1.2 million people. Its "
    "economy depends on farming, tourism and small factories.",
    "Document [6](Title: Lake Umber) Lake Umber is a shallow lake fed by melting snow. In summer "
    "its water temperature can reach 24 degrees.",
    "Document [7](Title: Railway history) The first railway line opened in 1871 and linked the "
    "harbor with the mines in the east. Steam engines ran until 1958.",
    "Document [8](Title: Sela river) The Sela river is 412 km long. It starts in the Ostra "
    "mountains and ends in the northern sea near Miren.",
    "Document [9](Title: Local cuisine) The local cuisine is known for smoked fish, rye bread "
    "and a sweet cheese called mira.",
    "Document [10](Title: University of Tesk) The University of Tesk was founded in 1904. It is "
    "famous for its school of geology and its large library.",
]

INSTRUCTION = "Answer the question using the documents below. Be short and exact."
MATH_QUESTION = "Question: Sam has 7 boxes with 9 pens each. He gives away 15 pens. How many pens are left?"

LONG_DOC = gt.transcript(31, 110)          # > 1200 small-model tokens: several windows
SLIDING_DOC = gt.transcript(32, 75)        # ~900 gpt2-tiny / ~810 llama-tiny tokens: sliding KV
MEDIUM_DOC = gt.transcript(33, 14)         # ~120-token loss text
LOSS_LONG = gt.transcript(34, 60)          # ~500-token loss text

SPLIT_DOC = (
    gt.transcript(41, 5) + "\n\n" + gt.transcript(42, 4) + "\n\n\n" + gt.transcript(43, 5)
    + "\n\n" + gt.MATH2
)
DOTS_DOC = (
    "Wait.. the report is late.. again. " + gt.transcript(44, 6) + " So.. what now.. we vote.. "
    + gt.transcript(45, 5) + ".. The end.."
)

SENTENCE_DOCS = [
    gt.MEETING + " " + gt.transcript(51, 8),
    "Dr. Smith met the mayor at 9 a.m. on Monday. The budget rose by 3.5 percent, e.g. for "
    "schools. " + gt.transcript(52, 7),
    gt.transcript(53, 9) + " \"We are done,\" she said. Is that final? Yes!",
]

CHINESE_DOCS = gt.CHINESE + [
    "新闻内容\n铁路部门表示，春运期间全国铁路预计发送旅客超过3亿人次，比去年增长8%。"
    "为方便旅客出行，多条线路将加开临时列车，车站也将延长售票时间。\n类别：交通",
    "新闻内容\n某科技公司发布了新款手机，屏幕尺寸为6.5英寸，电池容量为5000毫安时。"
    "公司表示，这款手机将于下月在全国上市，售价约为2999元。\n类别：科技",
]

RECOVER_RESPONSES = [
    "Angela buys 3 * 6 = 18 apples, so she has 30 apples and gives away 10. The answer is 20",
    "The river Sela flows through the city of Veloria.",
    "Total distance 420 km, total time 5 hours, so the average speed is 84 km/h, roughly.",
    "The council approved the annual budget unanimously.",
]

SENTENCE_TEXTS = [
    "Dr. Smith arrived at 9 a.m. He was late.",
    "Prices rose 3.5 percent in May. Analysts expected 2.1 percent.",
    "We need fruit, e.g. apples and pears. Also bread.",
    "The U.S. economy grew. The U.K. economy did not.",
    "\"Is it done?\" she asked. \"Yes,\" he said.",
    "Wait... what happened? Nobody knows...",
    "First line\nSecond line. Third sentence!\n\nNew paragraph here.",
    "Mr. and Mrs. Brown live on Elm St. in Springfield. They moved in 2019.",
    "It costs $1,250.50 (approx.). Pay by Friday!",
    "See https://example.com/docs?id=42. Then reply.",
    "No punctuation at the end",
    "新闻内容。第12届会议开幕。来自30多个国家的代表参加。",
    gt.MEETING,
] + SENTENCE_DOCS


def corpus():
    parts = [gt.corpus()] + GSM_DEMOS + RAG_DOCS + [RAG_QUESTION, INSTRUCTION, MATH_QUESTION]
    parts += [LONG_DOC, SPLIT_DOC, DOTS_DOC] + SENTENCE_DOCS + CHINESE_DOCS + RECOVER_RESPONSES
    parts += SENTENCE_TEXTS
    r = random.Random(5)
    parts += [gt.transcript(r.randrange(1000, 2000), 20) for _ in range(5)]
    return "\n".join(parts)
