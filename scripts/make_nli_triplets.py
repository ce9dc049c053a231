"""Generate the project's small NLI-style triplet file, `data/nli/triplets.csv`.

The file is for smoke runs and tests of `vela-search train`; it is not a substitute for the SimCSE NLI
data the paper trained on. Every sentence is built here from templates and a hand-written vocabulary, with
a fixed seed, so the output is reproducible byte for byte:

    python scripts/make_nli_triplets.py            # writes data/nli/triplets.csv
    python scripts/make_nli_triplets.py --check    # exits 1 if the committed file is out of date

Each row is (sent0, sent1, hard_neg) as in the SimCSE NLI CSV:

- sent1 entails sent0's content: it keeps the key content words (the sound source and what it does, or
  the person's activity) and rephrases the rest (another sentence frame, a paraphrased or dropped setting,
  a more general subject).
- hard_neg contradicts it while sharing its surface: the same sentence frame and setting, but another
  source or action (sounds), another activity (scenes) or one event swapped (sequences).

So a model can only separate positives from hard negatives by attending to the content words, which a
small model learns quickly, and held-out rows reuse the same vocabulary in new combinations.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "nli" / "triplets.csv"
DEFAULT_SEED = 20240611
# Rows per family: sound events, everyday scenes, two-event sequences.
DEFAULT_COUNTS = (330, 180, 90)


# --------------------------------------------------------------------------------------------------
# Vocabulary: sound sources
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One thing a source does, as (3rd person, -ing form) wordings.

    With `synonyms`, every wording entails every other. Otherwise the first wording is the plainest and
    the others add detail ("whirs" / "whirs loudly"), so only the first is entailed by all of them.
    """

    forms: tuple[tuple[str, str], ...]
    synonyms: bool = False

    def entailed_forms(self, used: tuple[str, str]) -> list[tuple[str, str]]:
        """Wordings that a sentence using `used` entails, preferring other wordings than `used`."""
        if self.synonyms:
            return [f for f in self.forms if f != used] or [used]
        return [self.forms[0]]


@dataclass(frozen=True)
class Source:
    """A sound source: noun phrases (the first is the plainest), number, category and actions."""

    key: str
    category: str
    nouns: tuple[str, ...]
    actions: tuple[Action, ...]
    plural: bool = False
    # Sources that can sensibly be "close to the microphone".
    small: bool = True


def _a(*forms: tuple[str, str]) -> Action:
    return Action(forms=tuple(forms))


def _s(*forms: tuple[str, str]) -> Action:
    return Action(forms=tuple(forms), synonyms=True)


# fmt: off
SOURCES: tuple[Source, ...] = (
    # animals
    Source("dog", "animals", ("a dog", "a small dog", "a big dog"), (
        _s(("barks loudly", "barking loudly"), ("lets out loud barks", "letting out loud barks")),
        _a(("growls", "growling"), ("growls in a low voice", "growling in a low voice")),
        _a(("whines", "whining"), ("whines quietly", "whining quietly")),
    )),
    Source("cat", "animals", ("a cat", "a small cat", "a house cat"), (
        _a(("meows", "meowing"), ("meows softly", "meowing softly")),
        _a(("purrs", "purring"), ("purrs contentedly", "purring contentedly")),
        _a(("hisses", "hissing"), ("hisses angrily", "hissing angrily")),
    )),
    Source("birds", "animals", ("birds", "several birds", "small birds"), (
        _a(("chirp", "chirping"), ("chirp and tweet", "chirping and tweeting")),
        _a(("sing", "singing"), ("sing sweetly", "singing sweetly")),
    ), plural=True, small=False),
    Source("rooster", "animals", ("a rooster", "a farm rooster"), (
        _a(("crows", "crowing"), ("crows loudly", "crowing loudly")),
    ), small=False),
    Source("cow", "animals", ("a cow", "a dairy cow"), (
        _a(("moos", "mooing"), ("moos loudly", "mooing loudly")),
    ), small=False),
    Source("horse", "animals", ("a horse", "a brown horse"), (
        _a(("neighs", "neighing"), ("neighs loudly", "neighing loudly")),
        _a(("gallops past", "galloping past"), ("gallops by", "galloping by")),
    ), small=False),
    Source("frogs", "animals", ("frogs", "many frogs"), (
        _a(("croak", "croaking"), ("croak in a chorus", "croaking in a chorus")),
    ), plural=True, small=False),
    # vehicles
    Source("car", "vehicles", ("a car", "a small car", "an old car"), (
        _s(("drives past", "driving past"), ("drives by", "driving by")),
        _s(("honks its horn", "honking its horn"), ("sounds its horn", "sounding its horn")),
        _s(("starts its engine", "starting its engine"), ("starts up its engine", "starting up its engine")),
    ), small=False),
    Source("train", "vehicles", ("a train", "a freight train", "a passenger train"), (
        _a(("rumbles along the tracks", "rumbling along the tracks"),
           ("rolls along the tracks", "rolling along the tracks")),
        _s(("blows its whistle", "blowing its whistle"), ("sounds its whistle", "sounding its whistle")),
    ), small=False),
    Source("motorcycle", "vehicles", ("a motorcycle", "a loud motorcycle"), (
        _a(("revs its engine", "revving its engine"), ("revs its engine hard", "revving its engine hard")),
        _s(("speeds past", "speeding past"), ("speeds by", "speeding by")),
    ), small=False),
    Source("airplane", "vehicles", ("an airplane", "a jet airplane", "a large airplane"), (
        _s(("flies overhead", "flying overhead"), ("passes overhead", "passing overhead")),
    ), small=False),
    Source("truck", "vehicles", ("a truck", "a heavy truck", "a delivery truck"), (
        _s(("reverses slowly", "reversing slowly"), ("backs up slowly", "backing up slowly")),
        _a(("idles", "idling"), ("idles noisily", "idling noisily")),
    ), small=False),
    Source("helicopter", "vehicles", ("a helicopter", "a police helicopter"), (
        _s(("hovers overhead", "hovering overhead"), ("hovers above", "hovering above")),
    ), small=False),
    # weather
    Source("rain", "weather", ("rain", "heavy rain", "steady rain"), (
        _a(("falls on a roof", "falling on a roof"), ("pours onto a roof", "pouring onto a roof")),
        _s(("patters on a window", "pattering on a window"), ("taps on a window", "tapping on a window")),
    ), small=False),
    Source("thunder", "weather", ("thunder", "loud thunder"), (
        _a(("rumbles", "rumbling"), ("rumbles deeply", "rumbling deeply")),
        _a(("cracks", "cracking"), ("cracks sharply", "cracking sharply")),
    ), small=False),
    Source("wind", "weather", ("wind", "strong wind", "a cold wind"), (
        _a(("howls", "howling"), ("howls loudly", "howling loudly")),
        _a(("gusts through the trees", "gusting through the trees"),
           ("blows through the trees", "blowing through the trees")),
    ), small=False),
    Source("hail", "weather", ("hail", "heavy hail"), (
        _s(("clatters on a roof", "clattering on a roof"), ("rattles on a roof", "rattling on a roof")),
    ), small=False),
    # water
    Source("stream", "water", ("a stream", "a small stream", "a mountain stream"), (
        _s(("flows over rocks", "flowing over rocks"), ("runs over rocks", "running over rocks")),
        _a(("babbles", "babbling"), ("babbles gently", "babbling gently")),
    ), small=False),
    Source("waves", "water", ("waves", "ocean waves", "large waves"), (
        _s(("crash on the shore", "crashing on the shore"), ("break on the shore", "breaking on the shore")),
    ), plural=True, small=False),
    Source("faucet", "water", ("a faucet", "a kitchen faucet"), (
        _s(("runs into a sink", "running into a sink"),
           ("pours water into a sink", "pouring water into a sink")),
        _a(("drips slowly", "dripping slowly"), ("drips steadily", "dripping steadily")),
    )),
    Source("waterfall", "water", ("a waterfall", "a large waterfall"), (
        _a(("roars", "roaring"), ("roars steadily", "roaring steadily")),
    ), small=False),
    Source("toilet", "water", ("a toilet", "a public toilet"), (
        _a(("flushes", "flushing"), ("flushes loudly", "flushing loudly")),
    )),
    # voices
    Source("man", "voices", ("a man", "an adult man", "an older man"), (
        _s(("speaks calmly", "speaking calmly"), ("talks calmly", "talking calmly")),
        _a(("coughs", "coughing"), ("coughs several times", "coughing several times")),
        _a(("shouts", "shouting"), ("shouts angrily", "shouting angrily")),
    )),
    Source("woman", "voices", ("a woman", "a young woman", "an older woman"), (
        _a(("laughs", "laughing"), ("laughs out loud", "laughing out loud")),
        _a(("whispers", "whispering"), ("whispers softly", "whispering softly")),
        _s(("sings softly", "singing softly"), ("sings quietly", "singing quietly")),
    )),
    Source("baby", "voices", ("a baby", "a small baby", "an infant baby"), (
        _a(("cries", "crying"), ("cries loudly", "crying loudly")),
        _a(("giggles", "giggling"), ("giggles happily", "giggling happily")),
    )),
    Source("crowd", "voices", ("a crowd", "a large crowd"), (
        _a(("cheers", "cheering"), ("cheers loudly", "cheering loudly")),
        _a(("applauds", "applauding"), ("applauds warmly", "applauding warmly")),
    ), small=False),
    # music
    Source("piano", "music", ("a piano", "an old piano", "a grand piano"), (
        _s(("plays a gentle melody", "playing a gentle melody"),
           ("plays a soft melody", "playing a soft melody")),
    )),
    Source("guitarist", "music", ("a guitarist", "a street guitarist"), (
        _a(("strums a guitar", "strumming a guitar"),
           ("strums an acoustic guitar", "strumming an acoustic guitar")),
        _a(("tunes a guitar", "tuning a guitar"), ("tunes the strings of a guitar",
                                                   "tuning the strings of a guitar")),
    )),
    Source("drummer", "music", ("a drummer", "a young drummer"), (
        _s(("plays a fast beat on the drums", "playing a fast beat on the drums"),
           ("beats the drums quickly", "beating the drums quickly")),
    )),
    Source("violin", "music", ("a violin", "a solo violin"), (
        _a(("plays a sad melody", "playing a sad melody"), ("plays a slow, sad melody",
                                                           "playing a slow, sad melody")),
    )),
    Source("choir", "music", ("a choir", "a church choir"), (
        _a(("sings a hymn", "singing a hymn"), ("sings a slow hymn", "singing a slow hymn")),
    ), small=False),
    # tools
    Source("drill", "tools", ("a drill", "a power drill", "an electric drill"), (
        _a(("whirs", "whirring"), ("whirs loudly", "whirring loudly")),
        _s(("bores into wood", "boring into wood"), ("drills into wood", "drilling into wood")),
    )),
    Source("worker", "tools", ("a worker", "a carpenter"), (
        _a(("hammers nails", "hammering nails"),
           ("hammers nails into a board", "hammering nails into a board")),
        _s(("saws a plank", "sawing a plank"), ("saws through a plank", "sawing through a plank")),
    )),
    Source("chainsaw", "tools", ("a chainsaw", "a loud chainsaw"), (
        _a(("cuts through a log", "cutting through a log"), ("cuts into a log", "cutting into a log")),
    ), small=False),
    Source("mower", "tools", ("a lawn mower", "an old lawn mower"), (
        _s(("runs across a lawn", "running across a lawn"), ("moves across a lawn", "moving across a lawn")),
    ), small=False),
    Source("jackhammer", "tools", ("a jackhammer", "a noisy jackhammer"), (
        _a(("pounds the pavement", "pounding the pavement"), ("breaks up the pavement",
                                                             "breaking up the pavement")),
    ), small=False),
    # alarms
    Source("fire alarm", "alarms", ("a fire alarm", "a building fire alarm"), (
        _a(("beeps", "beeping"), ("beeps continuously", "beeping continuously")),
    )),
    Source("siren", "alarms", ("a siren", "a police siren", "an ambulance siren"), (
        _a(("wails", "wailing"), ("wails loudly", "wailing loudly")),
    ), small=False),
    Source("car alarm", "alarms", ("a car alarm", "a parked car's alarm"), (
        _a(("blares", "blaring"), ("blares repeatedly", "blaring repeatedly")),
    ), small=False),
    Source("alarm clock", "alarms", ("an alarm clock", "an old alarm clock"), (
        _a(("rings", "ringing"), ("rings loudly", "ringing loudly")),
    )),
    Source("smoke detector", "alarms", ("a smoke detector", "a ceiling smoke detector"), (
        _a(("chirps", "chirping"), ("chirps every few seconds", "chirping every few seconds")),
    )),
    Source("bell", "alarms", ("a church bell", "a large church bell"), (
        _a(("tolls", "tolling"), ("tolls slowly", "tolling slowly")),
    ), small=False),
    # household
    Source("door", "household", ("a door", "a wooden door", "an old door"), (
        _a(("creaks open", "creaking open"), ("slowly creaks open", "slowly creaking open")),
        _s(("slams shut", "slamming shut"), ("bangs shut", "banging shut")),
    )),
    Source("vacuum", "household", ("a vacuum cleaner", "an upright vacuum cleaner"), (
        _a(("hums", "humming"), ("hums steadily", "humming steadily")),
    )),
    Source("washing machine", "household", ("a washing machine", "an old washing machine"), (
        _a(("spins", "spinning"), ("spins rapidly", "spinning rapidly")),
        _a(("rumbles", "rumbling"), ("rumbles and shakes", "rumbling and shaking")),
    )),
    Source("kettle", "household", ("a kettle", "an electric kettle"), (
        _a(("whistles", "whistling"), ("whistles shrilly", "whistling shrilly")),
        _s(("boils", "boiling"), ("comes to a boil", "coming to a boil")),
    )),
    Source("phone", "household", ("a phone", "a mobile phone", "a telephone"), (
        _a(("rings", "ringing"), ("rings several times", "ringing several times")),
        _s(("vibrates on a table", "vibrating on a table"), ("buzzes on a table", "buzzing on a table")),
    )),
    Source("clock", "household", ("a clock", "a wall clock", "an old clock"), (
        _a(("ticks", "ticking"), ("ticks steadily", "ticking steadily")),
    )),
)

# fmt: on

# Settings: (phrase, paraphrase). The empty setting lets sentences go without one.
SETTINGS: tuple[tuple[str, str], ...] = (
    ("in the distance", "far away"),
    ("nearby", "close by"),
    ("in the background", "in the background"),
    ("close to the microphone", "right next to the microphone"),
    ("outside", "outdoors"),
    ("at night", "during the night"),
    ("early in the morning", "in the early morning"),
    ("for a few seconds", "briefly"),
    ("", ""),
)
NEAR_SETTING = "close to the microphone"

# Background clauses for "... while <bg>" frames, with the categories they must not be paired with
# (so a background sound never repeats the foreground one).
BACKGROUNDS: tuple[tuple[str, str], ...] = (
    ("people talk quietly", "voices"),
    ("a light wind blows", "weather"),
    ("birds chirp", "animals"),
    ("traffic hums", "vehicles"),
    ("soft music plays", "music"),
    ("water trickles", "water"),
)

# Sound frames. {N}/{n}: noun phrase (capitalised / not); {v}: verb (agreeing); {ving}: -ing form;
# {set}: " <setting>" or ""; {Set}: capitalised setting; {be}: is/are; {there}: There is/There are;
# {bg}: background clause.
FRAMES: tuple[tuple[str, bool], ...] = (
    # (template, needs a non-empty setting)
    ("{N} {v}{set}.", False),
    ("{Set}, {n} {v}.", True),
    ("{there} {n} {ving}{set}.", False),
    ("You can hear {n} {ving}{set}.", False),
    ("{N} {be} {ving}{set}.", False),
    ("{N} {v}{set} while {bg}.", False),
    ("The sound of {n} {ving}{set}.", False),
    ("{Set}, {n} can be heard {ving}.", True),
    ("{N} can be heard {ving}{set}.", False),
    ("A recording of {n} {ving}{set}.", False),
    ("{N} {v}{set}, and then it becomes quiet.", False),
    ("A microphone picks up {n} {ving}{set}.", False),
)


# --------------------------------------------------------------------------------------------------
# Vocabulary: everyday scenes
# --------------------------------------------------------------------------------------------------

# Subjects: (phrase, plural, more general paraphrases it entails).
SUBJECTS: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    ("a man", False, ("a person", "someone")),
    ("a woman", False, ("a person", "someone")),
    ("a young boy", False, ("a boy", "a child")),
    ("a little girl", False, ("a girl", "a child")),
    ("an old man", False, ("an elderly man", "a man")),
    ("an old woman", False, ("an elderly woman", "a woman")),
    ("a teenager", False, ("a young person", "someone")),
    ("two friends", True, ("two people", "a pair of friends")),
    ("three children", True, ("some children", "several kids")),
    ("two sisters", True, ("two people", "two siblings")),
)

# Activities by place: (base form, -ing form) variants with the same meaning. A hard negative takes
# another activity of the same place, as in NLI contradictions that keep the subject and the scene.
# fmt: off
SCENES: dict[str, tuple[tuple[str, ...], tuple[tuple[tuple[str, str], ...], ...]]] = {
    "home": (
        ("at home", "in the house", "in a small apartment", "in the living room"),
        (
            (("cook dinner", "cooking dinner"), ("make dinner", "making dinner")),
            (("wash the dishes", "washing the dishes"), ("clean the dishes", "cleaning the dishes")),
            (("read a book", "reading a book"), ("read a thick book", "reading a thick book")),
            (("sleep on the couch", "sleeping on the couch"), ("doze on the couch", "dozing on the couch")),
            (("watch television", "watching television"), ("watch a show on television",
                                                             "watching a show on television")),
            (("vacuum the carpet", "vacuuming the carpet"), ("clean the carpet with a vacuum",
                                                              "cleaning the carpet with a vacuum")),
            (("play the piano", "playing the piano"), ("practice the piano", "practicing the piano")),
            (("talk on the phone", "talking on the phone"), ("chat on the phone", "chatting on the phone")),
            (("fold laundry", "folding laundry"), ("fold clean laundry", "folding clean laundry")),
        ),
    ),
    "street": (
        ("in a park", "on a city street", "near a busy road", "in a quiet square"),
        (
            (("ride a bicycle", "riding a bicycle"), ("pedal a bicycle", "pedaling a bicycle")),
            (("walk a dog", "walking a dog"), ("take a dog for a walk", "taking a dog for a walk")),
            (("play football", "playing football"), ("kick a football around", "kicking a football around")),
            (("jog along a path", "jogging along a path"), ("run along a path", "running along a path")),
            (("sit on a bench", "sitting on a bench"), ("rest on a bench", "resting on a bench")),
            (("play the guitar", "playing the guitar"), ("strum a guitar", "strumming a guitar")),
            (("feed the pigeons", "feeding the pigeons"), ("throw bread to the pigeons",
                                                           "throwing bread to the pigeons")),
            (("wait for a bus", "waiting for a bus"), ("wait at a bus stop", "waiting at a bus stop")),
        ),
    ),
    "beach": (
        ("at the beach", "by the sea", "on the shore", "near the water"),
        (
            (("swim in the sea", "swimming in the sea"),
             ("swim in the cold sea", "swimming in the cold sea")),
            (("build a sandcastle", "building a sandcastle"), ("make a sandcastle", "making a sandcastle")),
            (("fly a kite", "flying a kite"), ("fly a colorful kite", "flying a colorful kite")),
            (("collect shells", "collecting shells"), ("gather shells", "gathering shells")),
            (("sunbathe on a towel", "sunbathing on a towel"), ("lie on a towel in the sun",
                                                                 "lying on a towel in the sun")),
            (("play volleyball", "playing volleyball"), ("play a game of volleyball",
                                                         "playing a game of volleyball")),
        ),
    ),
    "work": (
        ("in a workshop", "in a garage", "at a construction site", "in a shed"),
        (
            (("hammer nails into a board", "hammering nails into a board"),
             ("drive nails into a board", "driving nails into a board")),
            (("cut wood with a saw", "cutting wood with a saw"),
             ("saw a piece of wood", "sawing a piece of wood")),
            (("drill a hole in the wall", "drilling a hole in the wall"),
             ("make a hole in the wall with a drill", "making a hole in the wall with a drill")),
            (("paint a wooden chair", "painting a wooden chair"), ("put paint on a wooden chair",
                                                                   "putting paint on a wooden chair")),
            (("repair a car engine", "repairing a car engine"), ("fix a car engine", "fixing a car engine")),
            (("sweep the floor", "sweeping the floor"), ("sweep up the floor", "sweeping up the floor")),
        ),
    ),
}

# fmt: on

# Activities whose later wordings add detail to the first (as `Action.synonyms=False`); the others'
# wordings are synonyms.
ELABORATED_ACTIVITIES = frozenset(
    {
        "read a book",
        "play the piano",
        "fold laundry",
        "jog along a path",
        "play the guitar",
        "feed the pigeons",
        "swim in the sea",
        "fly a kite",
    }
)

# Scene frames. {S}/{s}: subject; {be}: is/are; {ing}: -ing form; {v}: verb agreeing with the subject;
# {loc}: place; {Loc}: capitalised place.
SCENE_FRAMES: tuple[str, ...] = (
    "{S} {be} {ing} {loc}.",
    "{S} {v} {loc}.",
    "{Loc}, {s} {be} {ing}.",
    "There {be} {s} {ing} {loc}.",
    "{Loc}, {s} {v}.",
    "{S} {be} busy {ing} {loc}.",
)
# Entailed rephrasings; the place may be dropped (less information is still entailed).
SCENE_POSITIVE_FRAMES: tuple[str, ...] = (
    "{S} {be} {ing} {loc}.",
    "{S} {v} {loc}.",
    "{S} {be} {ing}.",
    "{Loc}, {s} {be} {ing}.",
    "Someone is {ing} {loc}.",
    "{S} {v}.",
)

# Two-event frames: (anchor frame, positive frame) pairs, with events a and b. The positive states the
# same events in the same order with other words.
SEQUENCE_FRAMES: tuple[tuple[str, str], ...] = (
    ("{A} {av}, and then {b} {bv}.", "{B} {bv} after {a} {av}."),
    ("First {a} {av}, then {b} {bv}.", "{A} {av} before {b} {bv}."),
    ("{A} {av} before {b} {bv}.", "After {a} {av}, {b} {bv}."),
    ("{A} {av} and soon after {b} {bv}.", "{B} {bv} shortly after {a} {av}."),
    ("{A} {av}, followed by {b} {bing}.", "First {a} {av}, and then {b} {bv}."),
)


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _third_person(base: str) -> str:
    """Turn a base-form verb phrase into its 3rd person singular ("wash the dishes" -> "washes ...")."""
    head, _, rest = base.partition(" ")
    if head.endswith(("s", "sh", "ch", "x", "z")):
        head += "es"
    elif head.endswith("y") and head[-2:-1] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return f"{head} {rest}".strip()


def _sound_fields(source: Source, noun: str, form: tuple[str, str], setting: str, bg: str) -> dict[str, str]:
    # Source verbs are written in the form that agrees with the source's number.
    verb, ving = form
    return {
        "N": _cap(noun),
        "n": noun,
        "v": verb,
        "ving": ving,
        "set": f" {setting}" if setting else "",
        "Set": _cap(setting),
        "be": "are" if source.plural else "is",
        "there": "There are" if source.plural else "There is",
        "bg": bg,
    }


def _pick_setting(rng: random.Random, source: Source) -> tuple[str, str]:
    while True:
        setting = rng.choice(SETTINGS)
        if setting[0] != NEAR_SETTING or source.small:
            return setting


def _pick_background(rng: random.Random, *sources: Source) -> str:
    categories = {s.category for s in sources}
    return rng.choice([bg for bg, cat in BACKGROUNDS if cat not in categories])


def _contrasting_source(rng: random.Random, source: Source) -> Source:
    # Another category entirely, so the hard negative describes a clearly different sound.
    return rng.choice([s for s in SOURCES if s.category != source.category])


def sound_triplet(rng: random.Random) -> tuple[str, str, str]:
    """One row about a single sound event."""
    source = rng.choice(SOURCES)
    action_index = rng.randrange(len(source.actions))
    action = source.actions[action_index]
    setting, setting_para = _pick_setting(rng, source)

    frame_index = rng.randrange(len(FRAMES))
    frame, needs_setting = FRAMES[frame_index]
    if needs_setting and not setting:
        setting, setting_para = rng.choice([s for s in SETTINGS if s[0] and s[0] != NEAR_SETTING])

    # The negative may share the source (then it needs a different action) as well as the frame.
    other: Source
    if len(source.actions) > 1 and rng.random() < 0.3:
        other = source
        other_action = rng.choice([a for i, a in enumerate(source.actions) if i != action_index])
    else:
        other = _contrasting_source(rng, source)
        other_action = rng.choice(other.actions)
    if setting == NEAR_SETTING and not other.small:
        other = rng.choice([s for s in SOURCES if s.small and s.category != source.category])
        other_action = rng.choice(other.actions)

    bg = _pick_background(rng, source, other)
    noun = rng.choice(source.nouns)
    anchor_form = rng.choice(action.forms)
    anchor = frame.format(**_sound_fields(source, noun, anchor_form, setting, bg))

    # Positive: another frame without the background clause, the plainest or the same noun, another
    # wording of the action, the setting paraphrased, kept or dropped.
    # Frames that add a clause ("while ...", "and then ...") would add information: not for positives.
    pos_frames = [
        (f, need)
        for i, (f, need) in enumerate(FRAMES)
        if i != frame_index and "{bg}" not in f and "and then" not in f
    ]
    pos_frame, pos_needs = rng.choice(pos_frames)
    r = rng.random()
    pos_setting = setting_para if r < 0.5 else setting if r < 0.8 else ""
    if pos_needs and not pos_setting:
        pos_setting = setting_para or setting
    if pos_needs and not pos_setting:
        pos_frame = "{N} {v}{set}."
    pos_noun = rng.choice((source.nouns[0], noun))
    pos_form = rng.choice(action.entailed_forms(anchor_form))
    positive = pos_frame.format(**_sound_fields(source, pos_noun, pos_form, pos_setting, bg))

    neg_noun = noun if other is source else rng.choice(other.nouns)
    neg_form = rng.choice(other_action.forms)
    negative = frame.format(**_sound_fields(other, neg_noun, neg_form, setting, bg))
    return anchor, positive, negative


def scene_triplet(rng: random.Random) -> tuple[str, str, str]:
    """One row about a person doing something somewhere."""
    subject, plural, generals = rng.choice(SUBJECTS)
    places, activities = SCENES[rng.choice(sorted(SCENES))]
    place = rng.choice(places)
    act_index = rng.randrange(len(activities))
    activity = activities[act_index]
    other_activity = rng.choice([a for i, a in enumerate(activities) if i != act_index])

    def fields(subj: str, form: tuple[str, str], loc: str) -> dict[str, str]:
        base, ing = form
        return {
            "S": _cap(subj),
            "s": subj,
            "be": "are" if plural else "is",
            "ing": ing,
            "v": base if plural else _third_person(base),
            "loc": loc,
            "Loc": _cap(loc),
        }

    frame = rng.choice(SCENE_FRAMES)
    form = rng.choice(activity)
    anchor = frame.format(**fields(subject, form, place))

    pos_frame = rng.choice([f for f in SCENE_POSITIVE_FRAMES if f != frame])
    if pos_frame.startswith("Someone") and plural:
        # "Someone" carries its own (singular) subject; a plural subject needs a plural one.
        pos_frame = "Some people are {ing} {loc}."
    pos_subject = rng.choice((subject, *generals))
    if activity[0][0] in ELABORATED_ACTIVITIES:
        pos_form = activity[0]
    else:
        pos_form = rng.choice([f for f in activity if f != form] or list(activity))
    positive = pos_frame.format(**fields(pos_subject, pos_form, place))

    negative = frame.format(**fields(subject, rng.choice(other_activity), place))
    return anchor, positive, negative


def sequence_triplet(rng: random.Random) -> tuple[str, str, str]:
    """One row about two sound events in order."""
    first = rng.choice(SOURCES)
    second = rng.choice([s for s in SOURCES if s.category != first.category])

    def event(source: Source) -> tuple[str, str, str]:
        action = rng.choice(source.actions)
        verb, ving = rng.choice(action.forms)
        return rng.choice(source.nouns), verb, ving

    a, b = event(first), event(second)
    anchor_frame, pos_frame = rng.choice(SEQUENCE_FRAMES)

    def render(frame: str, ea: tuple[str, str, str], eb: tuple[str, str, str]) -> str:
        return frame.format(A=_cap(ea[0]), a=ea[0], av=ea[1], B=_cap(eb[0]), b=eb[0], bv=eb[1], bing=eb[2])

    anchor = render(anchor_frame, a, b)
    positive = render(pos_frame, a, b)
    # The negative keeps one event and the frame, and swaps the other event for a different sound.
    swap_first = rng.random() < 0.5
    swap = rng.choice([s for s in SOURCES if s.category not in (first.category, second.category)])
    if swap_first:
        negative = render(anchor_frame, event(swap), b)
    else:
        negative = render(anchor_frame, a, event(swap))
    return anchor, positive, negative


def generate(
    seed: int = DEFAULT_SEED, counts: tuple[int, int, int] = DEFAULT_COUNTS
) -> list[tuple[str, str, str]]:
    """Generate the triplets: `counts` rows of each family, unique anchors, in a shuffled order.

    Args:
        seed: Seed of the only random generator used.
        counts: Rows of sound, scene and sequence triplets.

    Returns:
        (sent0, sent1, hard_neg) rows.
    """
    rng = random.Random(seed)
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for make, count in zip((sound_triplet, scene_triplet, sequence_triplet), counts, strict=True):
        made = 0
        attempts = 0
        while made < count:
            attempts += 1
            if attempts > count * 50:
                raise RuntimeError(f"{make.__name__}: vocabulary too small for {count} unique rows")
            row = make(rng)
            # Unique anchors keep the held-out split free of anchors seen in training.
            if row[0] in seen or len(set(row)) < 3:
                continue
            seen.add(row[0])
            rows.append(row)
            made += 1
    rng.shuffle(rows)
    return rows


def render_csv(rows: list[tuple[str, str, str]]) -> str:
    """The CSV text of `rows` with the SimCSE header."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("sent0", "sent1", "hard_neg"))
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) the triplet CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output CSV path")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from the generated text"
    )
    args = parser.parse_args(argv)

    text = render_csv(generate(args.seed))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"{args.out} is out of date; run scripts/make_nli_triplets.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="")
    print(f"wrote {text.count(chr(10)) - 1} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
