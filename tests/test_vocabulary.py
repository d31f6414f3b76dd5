"""The vocabulary: source spellings become words, synonyms merge, every source name is kept."""
from recon_serve.data.vocabulary import Vocabulary, canonical, words


def test_words_split_camel_case_snake_case_and_odd_separators():
    assert words("NonWheelChair") == "non wheel chair"
    assert words("night_stand") == "night stand"
    assert words("multiple__peak_tent") == "multiple peak tent"
    assert words("ComputerKeyboard") == "computer keyboard"
    assert words("F117") == "f117"


def test_known_synonyms_merge_into_one_class():
    assert canonical("aeroplane") == canonical("airplane") == canonical("Monoplane") == "airplane"
    assert canonical("couch") == canonical("sofa")
    assert canonical("NonWheelChair") == canonical("chair") == canonical("dining_chair")
    assert canonical("night_stand") == "night stand"
    assert canonical("PlantIndoors") == canonical("potted_plant") == canonical("plant")
    # PSB fine names only mean something under their parent class
    assert canonical("rectangular") == "rectangular table" and canonical("barren") == "bare tree"
    # household assets: colour, size and brand words are dropped
    assert canonical("red_akita_black_bowl", "libero") == canonical("bowl") == "bowl"
    assert canonical("white_yellow_mug", "libero") == canonical("Mug") == "mug"


def test_every_source_name_is_kept_and_offered_as_a_caption():
    v = Vocabulary()
    a = v.add("shapenet", "aeroplane")
    b = v.add("modelnet40", "airplane")
    c = v.add("shrec12", "Monoplane")
    v.add("modelnet40", "airplane")  # a repeat adds nothing
    assert a == b == c and v.classes == ["airplane"]
    assert v.sources["airplane"] == [("shapenet", "aeroplane"), ("modelnet40", "airplane"), ("shrec12", "Monoplane")]
    assert v.names("airplane") == ["airplane", "aeroplane", "monoplane"]
    assert Vocabulary.from_dict(v.to_dict()) == v
