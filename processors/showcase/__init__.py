"""Pure core of the KION-style showcase backend ("Blender"): model, business rules, assembly,
stability, daily checks and sample data. No I/O here: the stream/HTTP shell wires these functions."""
from .assemble import assemble, build_pumpkin, hidden_titles
from .catalogue import CatalogueIndex, fill_auto_shelves
from .checks import daily_checks
from .config import DEFAULT_POLICY, ForYouWeights, ShowcasePolicy
from .errors import ShowcaseInputError
from .model import Alarm, Audience, Shelf, ShelfDef, Showcase, Stats, Title, UserHistory, Viewer
from .stability import ReplaceDecision, should_replace
from .view import content_hash, from_view, to_view, view_meta

__all__ = [
    "Alarm", "Audience", "CatalogueIndex", "DEFAULT_POLICY", "ForYouWeights", "ReplaceDecision", "Shelf",
    "ShelfDef", "Showcase", "ShowcaseInputError", "ShowcasePolicy", "Stats", "Title", "UserHistory", "Viewer",
    "assemble", "build_pumpkin", "content_hash", "daily_checks", "fill_auto_shelves", "from_view",
    "hidden_titles", "should_replace", "to_view", "view_meta",
]
