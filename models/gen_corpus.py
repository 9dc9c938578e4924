#!/usr/bin/env python3
"""Seeded generator of a small-domain English corpus for the bundled demo model.

Each document is a few short, regular sentences about one topic, so that a tiny
GPT-2 can learn patterns a person can check by eye (the days of the week follow
each other, "two plus three is five", a cat says meow, grass is green).

Documents are dicts {"text": ..., "label": <topic>}. Topics are registered in
TOPICS; DEMO_TOPICS are the ones the demo model is trained on. Other topic sets
(e.g. labelled comment sets) can be added as further generator functions
without changing the demo corpus, because every document draws from its own
random stream derived from (seed, index).

    python models/gen_corpus.py --n 20 --seed 1            # print JSONL to stdout
    python models/gen_corpus.py --n 5000 --seed 1 --out corpus.jsonl
"""
import argparse
import json
import random
import sys

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
           "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
           "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Leo", "Rosa",
         "Max", "Nora", "Finn", "Ella", "Hugo", "Ivy"]

# name, sound, where it lives, food, legs, size, plural
ANIMALS = [
    ("cat", "meow", "in a house", "fish", 4, "small", "cats"),
    ("dog", "woof", "in a house", "meat", 4, "friendly", "dogs"),
    ("cow", "moo", "on a farm", "grass", 4, "big", "cows"),
    ("duck", "quack", "in a pond", "bread", 2, "small", "ducks"),
    ("sheep", "baa", "on a farm", "grass", 4, "soft", "sheep"),
    ("horse", "neigh", "on a farm", "hay", 4, "big", "horses"),
    ("pig", "oink", "on a farm", "apples", 4, "pink", "pigs"),
    ("owl", "hoot", "in the forest", "mice", 2, "wise", "owls"),
    ("frog", "croak", "in a pond", "flies", 4, "green", "frogs"),
    ("lion", "roar", "on the grassland", "meat", 4, "strong", "lions"),
    ("bee", "buzz", "in a hive", "nectar", 6, "tiny", "bees"),
    ("mouse", "squeak", "in a field", "cheese", 4, "tiny", "mice"),
    ("hen", "cluck", "on a farm", "seeds", 2, "small", "hens"),
    ("wolf", "howl", "in the forest", "meat", 4, "wild", "wolves"),
]

# thing, colour
COLOURED = [
    ("The sky", "blue"), ("Grass", "green"), ("The sun", "yellow"), ("Snow", "white"),
    ("Coal", "black"), ("A banana", "yellow"), ("A tomato", "red"), ("The sea", "blue"),
    ("A carrot", "orange"), ("A lemon", "yellow"), ("A leaf", "green"),
    ("A plum", "purple"), ("Milk", "white"), ("A strawberry", "red"),
    ("An orange", "orange"), ("Chocolate", "brown"), ("A frog", "green"),
    ("A cloud", "white"), ("A pumpkin", "orange"), ("The night", "dark"),
]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "brown", "pink"]
COLOUR_MIX = [("blue", "yellow", "green"), ("red", "white", "pink"), ("red", "yellow", "orange"),
              ("red", "blue", "purple"), ("black", "white", "grey")]

# food, kind, taste, meal
FOODS = [
    ("apple", "fruit", "sweet", "breakfast"), ("bread", "bread", "soft", "breakfast"),
    ("soup", "hot dish", "warm", "lunch"), ("cheese", "dairy food", "salty", "lunch"),
    ("rice", "grain", "plain", "dinner"), ("pear", "fruit", "sweet", "breakfast"),
    ("carrot", "vegetable", "crunchy", "dinner"), ("cake", "treat", "sweet", "tea"),
    ("egg", "dairy food", "plain", "breakfast"), ("pasta", "grain", "warm", "dinner"),
    ("grape", "fruit", "sweet", "lunch"), ("potato", "vegetable", "warm", "dinner"),
    ("honey", "treat", "sweet", "breakfast"), ("pie", "treat", "warm", "tea"),
]

WEATHER = [("sunny", "warm", "wear a hat"), ("rainy", "wet", "take an umbrella"),
           ("snowy", "cold", "wear a coat"), ("windy", "cool", "fly a kite"),
           ("cloudy", "grey", "stay close to home"), ("foggy", "damp", "walk slowly"),
           ("stormy", "loud", "stay inside")]
SEASONS = [("spring", "flowers grow"), ("summer", "the days are long"),
           ("autumn", "leaves fall"), ("winter", "it is cold")]

TOWNS = ["Oakford", "Millbrook", "Riverton", "Ashby", "Greenhill", "Stonebridge",
         "Fairport", "Elmwood", "Kingsmere", "Westfield", "Lakeside", "Brightwater"]
PLACES = ["a bakery", "a school", "a market", "a library", "a park", "a bridge",
          "a castle", "a harbour", "a mill", "a church", "a museum", "a station"]
FEATURES = ["by the river", "on a hill", "near the sea", "in a valley", "by a lake",
            "near the forest", "on the plain"]


def cap(s):
    return s[0].upper() + s[1:]


def a_an(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def topic_animals(r):
    name, sound, home, food, legs, size, plural = r.choice(ANIMALS)
    s = [f"The {name} is a {size} animal.",
         f"The {name} says {sound}.",
         f"The {name} lives {home}.",
         f"The {name} likes to eat {food}.",
         f"{cap(a_an(name))} has {NUMBERS[legs]} legs.",
         f"{cap(plural)} say {sound}.",
         f"{r.choice(NAMES)} has a pet {name}." if name in ("cat", "dog", "mouse", "duck", "hen") else f"{r.choice(NAMES)} saw a {name} today.",
         ]
    first = s[0]
    rest = s[1:]
    r.shuffle(rest)
    sents = [first] + rest[:r.randint(2, 4)]
    if r.random() < 0.3:
        other = r.choice(ANIMALS)
        sents.append(f"The {other[0]} says {other[1]}.")
    return " ".join(sents)


def topic_colours(r):
    items = r.sample(COLOURED, r.randint(3, 5))
    sents = [f"{thing} is {col}." for thing, col in items]
    if r.random() < 0.4:
        a, b, c = r.choice(COLOUR_MIX)
        sents.append(f"{cap(a)} and {b} make {c}.")
    if r.random() < 0.4:
        n = r.choice(NAMES)
        c = r.choice(COLOURS)
        sents.insert(0, f"{n} likes the colour {c}.")
    return " ".join(sents)


def topic_food(r):
    n = r.choice(NAMES)
    food, kind, taste, meal = r.choice(FOODS)
    f2 = r.choice(FOODS)
    sents = [f"{n} eats {a_an(food) if food not in ('bread', 'soup', 'cheese', 'rice', 'cake', 'pasta', 'honey') else food} for {meal}.",
             f"{cap(a_an(food)) if food not in ('bread', 'soup', 'cheese', 'rice', 'cake', 'pasta', 'honey') else cap(food)} is {a_an(kind)}.",
             f"It tastes {taste}.",
             f"{n} also likes {f2[0]}{'s' if f2[0] in ('apple', 'pear', 'carrot', 'egg', 'grape') else ''}."]
    if r.random() < 0.5:
        sents.append(f"After {meal}, {n} drinks {r.choice(['milk', 'water', 'tea', 'juice'])}.")
    return " ".join(sents)


def topic_weather(r):
    town = r.choice(TOWNS)
    w1, feel1, act1 = r.choice(WEATHER)
    w2, feel2, act2 = r.choice(WEATHER)
    d = r.randrange(7)
    sents = [f"Today is {DAYS[d]}.",
             f"It is {w1} in {town}.",
             f"When it is {w1}, it feels {feel1}, so people {act1}.",
             f"Tomorrow is {DAYS[(d + 1) % 7]}, and it will be {w2}."]
    if r.random() < 0.5:
        season, fact = r.choice(SEASONS)
        sents.append(f"In {season}, {fact}.")
    return " ".join(sents)


def topic_towns(r):
    town = r.choice(TOWNS)
    feat = r.choice(FEATURES)
    places = r.sample(PLACES, 3)
    other = r.choice([t for t in TOWNS if t != town])
    km = r.randint(2, 20)
    sents = [f"{town} is a small town {feat}.",
             f"It has {places[0]}, {places[1]} and {places[2]}.",
             f"{town} is {NUMBERS[km]} miles from {other}.",
             f"{r.choice(NAMES)} lives in {town}."]
    if r.random() < 0.5:
        sents.append(f"On {r.choice(DAYS)} there is a market in {town}.")
    return " ".join(sents)


def topic_counting(r):
    kind = r.random()
    if kind < 0.5:
        start = r.randint(1, 12)
        n = r.randint(4, 8)
        seq = NUMBERS[start:start + n]
        return f"Let us count: {', '.join(seq)}."
    if kind < 0.75:
        start = r.randint(8, 20)
        n = r.randint(4, 7)
        seq = [NUMBERS[i] for i in range(start, max(start - n, -1), -1)]
        return f"Counting down: {', '.join(seq)}."
    k = r.randint(1, 9)
    name, *_rest, plural = r.choice(ANIMALS)
    word = name if k == 1 else plural
    return f"{r.choice(NAMES)} sees {NUMBERS[k]} {word}. " + f"Count them: {', '.join(NUMBERS[1:k + 1])}."


def topic_arithmetic(r):
    sents = []
    for _ in range(r.randint(2, 4)):
        op = r.random()
        if op < 0.5:
            a = r.randint(0, 10)
            b = r.randint(0, 10)
            sents.append(f"{cap(NUMBERS[a])} plus {NUMBERS[b]} is {NUMBERS[a + b]}.")
        elif op < 0.85:
            a = r.randint(0, 20)
            b = r.randint(0, a)
            sents.append(f"{cap(NUMBERS[a])} minus {NUMBERS[b]} is {NUMBERS[a - b]}.")
        else:
            a = r.randint(0, 10)
            sents.append(f"{cap(NUMBERS[a])} comes after {NUMBERS[a - 1] if a > 0 else 'nothing'}." if a > 0 else
                         f"Zero comes before one.")
    return " ".join(sents)


def topic_days(r):
    kind = r.random()
    if kind < 0.35:
        d = r.randrange(7)
        n = r.randint(3, 7)
        seq = [DAYS[(d + i) % 7] for i in range(n)]
        return f"The days go {', '.join(seq)}."
    if kind < 0.6:
        d = r.randrange(7)
        return (f"Today is {DAYS[d]}. Tomorrow is {DAYS[(d + 1) % 7]}. "
                f"Yesterday was {DAYS[(d - 1) % 7]}.")
    if kind < 0.8:
        m = r.randrange(12)
        n = r.randint(3, 6)
        seq = [MONTHS[(m + i) % 12] for i in range(n)]
        return f"The months go {', '.join(seq)}."
    d = r.randrange(7)
    return (f"{DAYS[d]} comes after {DAYS[(d - 1) % 7]}. "
            f"{DAYS[(d + 1) % 7]} comes after {DAYS[d]}. There are seven days in a week.")


TOPICS = {
    "animals": topic_animals,
    "colours": topic_colours,
    "food": topic_food,
    "weather": topic_weather,
    "towns": topic_towns,
    "counting": topic_counting,
    "arithmetic": topic_arithmetic,
    "days": topic_days,
}
DEMO_TOPICS = list(TOPICS)


def generate(n, seed, topics=None):
    """Yields n documents. Document i depends only on (seed, i, topics)."""
    topics = list(topics or DEMO_TOPICS)
    for i in range(n):
        r = random.Random(f"{seed}:{i}")
        label = topics[r.randrange(len(topics))]
        yield {"text": TOPICS[label](r), "label": label}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--topics", default=",".join(DEMO_TOPICS))
    ap.add_argument("--out", default="-")
    a = ap.parse_args()
    topics = a.topics.split(",")
    for t in topics:
        if t not in TOPICS:
            sys.exit(f"unknown topic {t!r}; known: {', '.join(TOPICS)}")
    f = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    for doc in generate(a.n, a.seed, topics):
        f.write(json.dumps(doc) + "\n")
    if f is not sys.stdout:
        f.close()


if __name__ == "__main__":
    main()
