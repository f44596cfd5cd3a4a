"""The starting presets and profile picture sets; staff edit them in admin afterwards."""

from django.db import migrations

PRESETS = {
    "scene": [
        ("Beach at sunset", "on a beach at sunset, warm golden light"),
        ("City at night", "on a city street at night, neon reflections"),
        ("Forest", "in a sunlit forest, soft dappled light"),
        ("Cosy café", "in a cosy café, warm window light"),
        ("Photo studio", "in a photo studio, seamless grey backdrop"),
        ("Snowy mountains", "in snowy mountains, crisp winter light"),
    ],
    "outfit": [
        ("Casual", "wearing a casual t-shirt and jeans"),
        ("Business", "wearing a tailored blazer"),
        ("Evening", "wearing an elegant evening outfit"),
        ("Sporty", "wearing athletic sportswear"),
        ("Cosy knit", "wearing a chunky knit sweater"),
        ("Fantasy armour", "wearing ornate fantasy armour"),
    ],
    "style": [
        ("Photorealistic", "photorealistic"),
        ("Anime", "anime"),
        ("3D", "3D render"),
        ("Illustration", "illustration"),
        ("Film photo", "35mm film photo, grain"),
    ],
}

# (name, description, [(shot name, framing, scene, outfit, expression)])
SETS = [
    (
        "Dating profile",
        "Warm, natural photos that show a life",
        [
            ("Smiling close-up", "head and shoulders", "outdoors in soft daylight", "", "a warm genuine smile"),
            ("Coffee date", "waist up", "in a cosy café", "wearing a casual sweater", "relaxed and laughing"),
            ("Out and about", "three-quarter body", "on a city street", "wearing a casual jacket", "confident"),
            ("Beach day", "full body", "on a beach at sunset", "wearing summer clothes", "carefree"),
            ("Evening out", "waist up", "at a rooftop bar at night", "wearing an elegant evening outfit", "playful"),
            ("Hobby", "three-quarter body", "in a sunlit park", "wearing sportswear", "focused and happy"),
        ],
    ),
    (
        "Professional headshots",
        "Clean headshots for work profiles",
        [
            ("Classic headshot", "head and shoulders", "seamless grey studio backdrop", "wearing a tailored blazer", "friendly, approachable"),
            ("Office", "waist up", "in a bright modern office", "wearing business attire", "confident"),
            ("Speaker", "three-quarter body", "on a conference stage", "wearing smart business attire", "engaged, mid-sentence"),
            ("Outdoor professional", "head and shoulders", "outside a glass office building", "wearing a smart coat", "calm and assured"),
        ],
    ),
    (
        "Social avatars",
        "Bold, eye-catching avatars",
        [
            ("Bold colour", "close-up", "against a saturated colour backdrop", "", "a big grin"),
            ("Moody", "close-up", "in low dramatic light", "", "serious, intense gaze"),
            ("Golden hour", "head and shoulders", "outdoors at golden hour", "", "soft smile"),
            ("Neon", "head and shoulders", "lit by neon signs at night", "wearing a streetwear jacket", "cool and aloof"),
        ],
    ),
    (
        "Fantasy portraits",
        "The character in other worlds",
        [
            ("Knight", "waist up", "in a castle courtyard", "wearing ornate fantasy armour", "determined"),
            ("Mage", "waist up", "in an ancient library with floating lights", "wearing flowing mage robes", "mysterious"),
            ("Elven ranger", "three-quarter body", "in an enchanted forest", "wearing a leather ranger outfit", "alert"),
            ("Space explorer", "waist up", "aboard a starship bridge", "wearing a sleek space suit", "curious"),
        ],
    ),
]


def seed(apps, schema_editor):
    PromptPreset = apps.get_model("studio", "PromptPreset")
    ProfileSet = apps.get_model("studio", "ProfileSet")
    ProfileShot = apps.get_model("studio", "ProfileShot")
    for kind, presets in PRESETS.items():
        for position, (name, text) in enumerate(presets):
            PromptPreset.objects.get_or_create(kind=kind, name=name, defaults={"text": text, "position": position})
    for position, (name, description, shots) in enumerate(SETS):
        profile_set, created = ProfileSet.objects.get_or_create(
            name=name, defaults={"description": description, "position": position}
        )
        if created:
            for index, (shot, framing, scene, outfit, expression) in enumerate(shots):
                ProfileShot.objects.create(
                    profile_set=profile_set,
                    name=shot,
                    framing=framing,
                    scene=scene,
                    outfit=outfit,
                    expression=expression,
                    position=index,
                )


class Migration(migrations.Migration):
    dependencies = [("studio", "0003_prompt_presets_and_profile_sets")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
