"""Writes tests/goldens/punkt_english.json: nltk.sent_tokenize output for varied texts.

Run with the reference environment (NLTK 3.10 + the English punkt_tab model):
  NLTK_DATA=/work/ref/nltk_data /work/ref/venv/bin/python tools/make_punkt_goldens.py
The texts are written for this project (or taken from tools/golden_texts.py).
"""

import json
import os
import random
import sys

import nltk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_texts as gt  # noqa: E402

TEXTS = [
    "Hello there. How are you? I am fine!",
    "Dr. Smith met Mr. Jones at 5 p.m. yesterday. They talked.",
    "Use a tool, e.g. a hammer. Or i.e. something else. Then stop.",
    "The U.S. economy grew. The U.K. did not.",
    "We bought apples, pears, etc. and went home. Later we ate.",
    "We bought apples, pears, etc. Then we went home.",
    "J. R. R. Tolkien wrote books. He was British.",
    "The value is 3.5 today. Tomorrow it is 4.25.",
    "See No. 5 on the list. It is important.",
    "Wait... what happened? I don't know...",
    "He paused . . . then left. Nobody followed.",
    "He said, \"Stop.\" Then he left.",
    "She asked (quietly.) Nobody answered.",
    "'Really?' she said. 'Yes.' He nodded.",
    "\u201cIs it done?\u201d he asked. \u201cYes.\u201d",
    "What?! You did what?! Unbelievable.",
    "Line one.\nLine two.\n\nA new paragraph. Another sentence.",
    "No period at the end\nbut a newline",
    "First.\n\n\nSecond after blank lines.\n",
    "1. First item\n2. Second item\n3. Third item",
    "Steps: 1. open the box. 2. take it out. 3. done.",
    "the first sentence is lower case. the second one too. And a third.",
    "This ends with an abbreviation like etc. but continues in lower case.",
    "这是第一句。这是第二句。这是第三句！",
    "中文句子。English sentence. 混合文本。",
    "Visit https://example.com/a.b?c=d. It is great.",
    "Mail me at john.doe@example.com. I will reply.",
    "The file is named report.v2.final.pdf and it is big. Open it.",
    "Prices rose 2.5% in Jan. and fell in Feb. Experts disagree.",
    "He lives at 221B Baker St. London is big.",
    "It cost $1,000.00. That is a lot.",
    "Mt. Everest is tall. Mt. Fuji is too.",
    "The meeting is at 10 a.m. on Monday. Please come.",
    "Prof. Brown and Gen. Lee arrived. They sat.",
    "Ask Sen. Warren. She knows.",
    "This is a sentence.Another one without space. And one more.",
    "Ellipsis at end...",
    "Multiple   spaces.   Between   sentences.",
    "Tabs\tand. \tMore tabs.",
    "Trailing whitespace.   \n\t ",
    "",
    "   ",
    "Single",
    "A.",
    ". . .",
    "He said -- wait. -- no.",
    "It was (see Fig. 3) clear. Yes.",
    "Numbers like 1.5, 2.5. And 3.",
    "Is this ok?Yes it is.Fine.",
    "He yelled \"Help!\" and ran. Nobody came.",
    "The end.\" Then another.",
    "Ca. 300 people came. Approx. 20 left.",
    "Ünïcödé sentences work. Ça va bien. Ñandú corre.",
    "Greek: \u0391\u03b8\u03ae\u03bd\u03b1 \u03b5\u03af\u03bd\u03b1\u03b9. \u03a3\u03c0\u03ac\u03c1\u03c4\u03b7 \u03b5\u03c0\u03af\u03c3\u03b7\u03c2.",
    "He was born in 1990. In 2000 he moved.",
    "Version 2. is out. Version 3. is next.",
    "A. Smith and B. Jones wrote it. C. Brown edited.",
    "They arrived on Dec. 5. The party began.",
    "Emoji \U0001F600 here. Next sentence \U0001F680.",
    "Ms. X said: \u00abBonjour.\u00bb Then left.",
    "Sentence one.) Sentence two.",
    "Call 555-1234. Ask for Bob.",
    "i.e., this is it. ok.",
    gt.MEETING,
    gt.MATH,
    gt.MATH2,
    gt.MIXED,
    *gt.CHINESE,
    gt.transcript(7, 12),
    gt.transcript(11, 20),
]

# Seeded random mixes of the tricky pieces above (abbreviations, initials, numbers, quotes,
# brackets, ellipses, Unicode case and whitespace, dense joins without spaces).
ATOMS = ["Dr.", "Mr.", "e.g.", "i.e.", "U.S.", "etc.", "J.", "R.", "3.5", "No.", "5.", "...",
         ". . .", "?!", "!", "?", ".", ".", '"', "'", ")", "(", "\u201d", "\u2019", "--", "-",
         ",", ";", ":", "\n", "\n\n", " ", "\t", "the", "The", "He", "However", "a", "A",
         "x.y", "1,000", "\u00c9t\u00e9", "\u4e2d\u6587\u3002", "\u0130.", "\u00a0",
         "\u3000", "\x1c", "\x85", "\r", "[", "]", "\u00ab", "\u00bb", "Mt.", "Jan.", "1.",
         "&", "`", "\u0301", "\u03a3.", "_.", "www.a.com.", "b@c.d."]


def random_texts(seed, n):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        space = r.choice([0.2, 0.6])
        out.append("".join(r.choice(ATOMS) + (" " if r.random() < space else "")
                           for _ in range(r.randint(1, 25))))
    return out


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "goldens",
                       "punkt_english.json")
    cases = [{"text": t, "nltk": nltk.sent_tokenize(t)} for t in TEXTS + random_texts(12, 300)]
    doc = {"generator": "tools/make_punkt_goldens.py", "nltk": nltk.__version__, "cases": cases}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
