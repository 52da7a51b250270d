"""The labeling page: the clip with its sound, and one choice among the taxonomy's classes.

Annotators see the video player (``<Video>`` plays the soundtrack: eMotions labels are
audio-visual) and single-choice radio buttons in the taxonomy's class order. The model's
prediction, its confidence and the reason the clip was queued stay in the task data for the
export but are not shown: a visible guess anchors the annotator, and the point of a new stage
is an independent vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree.ElementTree import ParseError, canonicalize
from xml.sax.saxutils import quoteattr

FROM_NAME = "emotion"  # the <Choices> name: a vote's result is read from this control
TO_NAME = "video"
DATA_KEY = "video"  # task data field holding the /data/local-files/?d=... URL
FPS_KEY = "fps"  # task data field with the clip's frame rate (the player's frame counter)
DEFAULT_FPS = 24.0  # Label Studio's own default for <Video frameRate>


def labeling_config(classes: Sequence[str]) -> str:
    """Label Studio XML offering ``classes`` (in order) over a video player with sound.

    The player's frame rate comes from each task's ``fps`` (Label Studio reads ``frameRate``
    from task data): phone clips run at 25, 30 or 60 fps, and with its fixed default of 24 the
    frame counter and frame stepping an annotator uses would be off by up to 2.5x."""
    if not classes:
        raise ValueError("a labeling config needs at least one class")
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return (
        "<View>\n"
        '  <Header value="Which emotion does this clip convey (picture and sound)?"/>\n'
        f'  <Video name="{TO_NAME}" value="${DATA_KEY}" frameRate="${FPS_KEY}" muted="false" '
        'height="360"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" '
        'showInLine="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def same_config(a: str | None, b: str) -> bool:
    """Whether two labeling configs are the same XML (Label Studio re-formats what it stores)."""
    try:
        return canonicalize(a or "", strip_text=True) == canonicalize(b, strip_text=True)
    except ParseError:
        return False
