"""Input texts for the LLMLingua-2 goldens (also the training corpus of the tiny XLM-R tokenizer).

Everything here is written for this project or generated from templates with a seeded RNG.
"""

import random

MEETING = (
    "John: So, I've been thinking about the project, and I believe we need to make some changes. "
    "I mean, we want the project to succeed, right? So, I think we should consider maybe revising "
    "the timeline.\n\nSarah: I totally agree with you, John. We need to be realistic. The timeline "
    "is, like, too tight. You know what I mean? We should definitely extend it."
)

MATH = (
    "Question: Angela has 12 apples and buys 3 more bags with 6 apples in each bag. She gives 1/3 "
    "of all apples to her brother. How many apples does she have left?\n"
    "Let's think step by step\n"
    "Angela buys 3 * 6 = 18 apples.\n"
    "Now she has 12 + 18 = 30 apples.\n"
    "She gives away 30 / 3 = 10 apples.\n"
    "So she has 30 - 10 = 20 apples left.\n"
    "The answer is 20"
)

MATH2 = (
    "Question: A train travels 240 km in 3 hours, then 180 km in 2 hours. What is its average "
    "speed for the whole trip in km/h?\n"
    "Let's think step by step\n"
    "Total distance is 240 + 180 = 420 km.\n"
    "Total time is 3 + 2 = 5 hours.\n"
    "Average speed is 420 / 5 = 84 km/h.\n"
    "The answer is 84"
)

CHINESE = [
    "新闻内容\n第12届国际贸易与投资洽谈会于2008年10月在上海开幕。来自30多个国家和地区的企业代表参加了会议。"
    "会议期间，双方签署了多项合作协议，涉及金额超过50亿元。联系电话：０２１－１２３４５６７８。\n类别：商业、外贸、海关",
    "新闻内容\n海口市教育局宣布，今年将新建10所小学和5所中学，以满足不断增长的入学需求。"
    "新学校预计在2010年9月投入使用，总投资约为8亿元。\n类别：教育",
    "新闻内容\n据气象部门预报，本周末华北地区将出现大范围降雨，部分地区有暴雨。"
    "有关部门提醒市民注意出行安全，做好防汛准备工作。\n类别：天气",
]

MIXED = (
    "Release notes (v2.3.1): Fixed a crash when the config file is missing!! Improved speed by 35% "
    "on large inputs... See https://example.com/docs?id=42&lang=en for details. "
    "Ｆｕｌｌ－ｗｉｄｔｈ text: ＡＢＣ１２３. E-mail: ops@example.org; cost: $1,250.50 (approx.). "
    "Don't forget: it's John's & Mary's job -- not ours. Tabs\tand   spaces   collapse."
)

SUBJECTS = ["The council", "Our team", "The committee", "The city manager", "Staff", "The board",
            "The department", "Residents", "The applicant", "The mayor"]
VERBS = ["reviewed", "approved", "discussed", "postponed", "recommended", "questioned",
         "amended", "supported", "rejected", "summarized"]
OBJECTS = ["the zoning ordinance", "the annual budget", "the parking proposal",
           "the park district plan", "the housing report", "the transit contract",
           "the water rate increase", "the library renovation", "item 28 on the agenda",
           "the public safety update"]
TAILS = ["after a long debate", "without further comment", "for the second time this year",
         "because of new information", "with two amendments", "at the request of the public",
         "before the deadline of June 30", "despite strong objections", "in a 5 to 2 vote",
         "following the staff presentation"]


def transcript(seed, n_sentences):
    r = random.Random(seed)
    out = []
    for i in range(n_sentences):
        s = f"{r.choice(SUBJECTS)} {r.choice(VERBS)} {r.choice(OBJECTS)} {r.choice(TAILS)}."
        if r.random() < 0.15:
            s += " Thank you."
        if r.random() < 0.1:
            s += "\n"
        out.append(s)
    return " ".join(out)


def corpus():
    parts = [MEETING, MATH, MATH2, MIXED] + CHINESE
    parts += [transcript(s, 40) for s in range(20)]
    return "\n".join(parts)
