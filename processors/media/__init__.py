"""Upload media pipeline, one job per module (Netflix Cosmos style): content key, inspection,
ladder, encoding, thumbnails, validation, quality, object layout, signed URLs, orchestration."""
from .content_key import ContentKey, ContentKeyHasher, content_key_of_chunks, content_key_of_fileobj, content_key_of_path
from .encode import EncodeResult, EncodeSettings, EncoderPool, build_encode_argv, encode_renditions
from .inspect import MediaInfo, inspect
from .ladder import Recipe, build_ladder
from .limits import Limits
from .pipeline import ProcessResult, Progress, process_upload
from .quality import measure_quality
from .rejection import Rejection, RejectionCode
from .signing import VerifyResult, sign_url, verify
from .thumbnails import make_thumbnails, plan_thumbnails
from .tools import MediaTools, ToolCancelled, ToolFailed, ToolMissing, ToolTimeout
from .validate import Tolerance, Violation, validate_outputs

__all__ = [
    "ContentKey", "ContentKeyHasher", "content_key_of_chunks", "content_key_of_fileobj", "content_key_of_path",
    "EncodeResult", "EncodeSettings", "EncoderPool", "build_encode_argv", "encode_renditions",
    "MediaInfo", "inspect", "Recipe", "build_ladder", "Limits", "ProcessResult", "Progress", "process_upload",
    "measure_quality", "Rejection", "RejectionCode", "VerifyResult", "sign_url", "verify",
    "make_thumbnails", "plan_thumbnails", "MediaTools", "ToolCancelled", "ToolFailed", "ToolMissing",
    "ToolTimeout", "Tolerance", "Violation", "validate_outputs",
]
