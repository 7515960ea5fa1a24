"""A small built-in table of camera sensors, looked up by EXIF Make / Model: the pixel pitch of photos whose EXIF
has no FocalPlaneXResolution or FocalLengthIn35mmFilm (phones, mostly).

Each entry gives the sensor's pixel pitch at one image width (``native_width_px``, the full-size image as the camera
writes it) and/or the sensor width in mm; :func:`pixel_pitch_um` scales the pitch to the image as given (a
downscaled image has a larger pitch). Phones have several camera modules under one Model, so a phone entry is for
its main (wide) camera and also names the EXIF FocalLength of that module: with a focal length given,
:func:`lookup_sensor` matches only that module. Every value is the public spec cited in the entry's ``source``;
entries we could not source with confidence are left out (pass ``--pixel-size-um`` or ``--sensor-width-mm``).
"""

from __future__ import annotations

from dataclasses import dataclass

from defocus.errors import DefocusError


@dataclass(frozen=True)
class SensorEntry:
    """One camera (module) of the sensor table.

    Attributes:
        name: short id, used in provenance as ``sensor-table:<name>``.
        make: EXIF Make, as the camera writes it.
        models: the EXIF Model strings this entry covers.
        native_width_px: the width in pixels of the full-size image the camera writes, which ``pixel_pitch_um`` /
            ``sensor_width_mm`` refer to (for binned phone sensors: the binned output).
        pixel_pitch_um: pixel pitch at ``native_width_px`` (None: derived from ``sensor_width_mm``).
        sensor_width_mm: width of the sensor area imaged at ``native_width_px`` (None: derived from the pitch).
        focal_length_mm: EXIF FocalLength of this module (phones), None for interchangeable-lens cameras.
        f_number: the module's fixed f-number (phones), for information only.
        source: the public spec the values come from.
    """

    name: str
    make: str
    models: tuple[str, ...]
    native_width_px: int
    pixel_pitch_um: float | None = None
    sensor_width_mm: float | None = None
    focal_length_mm: float | None = None
    f_number: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.pixel_pitch_um is None and self.sensor_width_mm is None:
            raise DefocusError(f"sensor table entry {self.name}: needs pixel_pitch_um or sensor_width_mm")

    @property
    def pitch_at_native_um(self) -> float:
        """Pixel pitch (µm) at ``native_width_px``."""
        if self.pixel_pitch_um is not None:
            return float(self.pixel_pitch_um)
        return float(self.sensor_width_mm) * 1e3 / self.native_width_px

    @property
    def display_name(self) -> str:
        return f"{self.make} {self.models[0]}"


SENSORS: tuple[SensorEntry, ...] = (
    # ------------------------------------------------------------------------------------------------ phones
    SensorEntry(
        name="google-pixel-6-main",
        make="Google",
        models=("Pixel 6", "Pixel 6 Pro"),
        native_width_px=4080,
        pixel_pitch_um=2.4,
        sensor_width_mm=9.792,
        focal_length_mm=6.81,
        f_number=1.85,
        source=(
            "Google Pixel 6 / 6 Pro tech specs: 50 MP Octa PD Quad Bayer wide camera, 1.2 µm pixel width, f/1.85, "
            "1/1.31\" sensor; Samsung ISOCELL GN1 product page: 1.2 µm pixels, 8160x6144 (4x binned 4080x3072 "
            "output, 2.4 µm); EXIF FocalLength 6.81 mm"
        ),
    ),
    SensorEntry(
        name="google-pixel-7-main",
        make="Google",
        models=("Pixel 7", "Pixel 7 Pro"),
        native_width_px=4080,
        pixel_pitch_um=2.4,
        sensor_width_mm=9.792,
        focal_length_mm=6.81,
        f_number=1.85,
        source=(
            "Google Pixel 7 / 7 Pro tech specs: 50 MP Octa PD Quad Bayer wide camera, 1.2 µm pixel width, f/1.85, "
            "82° field of view, 1/1.31\" sensor (Samsung ISOCELL GN1, as in the Pixel 6: 8160x6144 at 1.2 µm, "
            "4x binned 4080x3072 output, 2.4 µm)"
        ),
    ),
    SensorEntry(
        name="apple-iphone-13-main",
        make="Apple",
        models=("iPhone 13", "iPhone 13 mini"),
        native_width_px=4032,
        pixel_pitch_um=1.7,
        focal_length_mm=5.1,
        f_number=1.6,
        source=(
            "Apple iPhone 13 announcement and tech specs: 12 MP Wide camera with 1.7 µm pixels, f/1.6 "
            "(4032x3024 images; EXIF lens 'iPhone 13 back dual wide camera 5.1mm f/1.6')"
        ),
    ),
    SensorEntry(
        name="apple-iphone-13-pro-main",
        make="Apple",
        models=("iPhone 13 Pro", "iPhone 13 Pro Max"),
        native_width_px=4032,
        pixel_pitch_um=1.9,
        focal_length_mm=5.7,
        f_number=1.5,
        source=(
            "Apple iPhone 13 Pro announcement and tech specs: 12 MP Wide camera with 1.9 µm pixels, f/1.5 "
            "(4032x3024 images; EXIF lens 'iPhone 13 Pro back triple camera 5.7mm f/1.5')"
        ),
    ),
    SensorEntry(
        name="apple-iphone-14-pro-main",
        make="Apple",
        models=("iPhone 14 Pro", "iPhone 14 Pro Max"),
        native_width_px=4032,
        pixel_pitch_um=2.44,
        focal_length_mm=6.86,
        f_number=1.78,
        source=(
            "Apple iPhone 14 Pro announcement and tech specs: 48 MP Main camera, quad-pixel sensor (1.22 µm pixels, "
            "8064x6048) binned to 2.44 µm quad pixels for 12 MP 4032x3024 images, f/1.78; EXIF lens "
            "'iPhone 14 Pro back triple camera 6.86mm f/1.78'"
        ),
    ),
    # ------------------------------------------------------------------------------ interchangeable-lens cameras
    SensorEntry(
        name="canon-eos-5d-mark-iv",
        make="Canon",
        models=("Canon EOS 5D Mark IV",),
        native_width_px=6720,
        sensor_width_mm=36.0,
        source="Canon EOS 5D Mark IV specifications: CMOS sensor approx. 36.0 x 24.0 mm, large image 6720x4480",
    ),
    SensorEntry(
        name="nikon-d850",
        make="NIKON CORPORATION",
        models=("NIKON D850",),
        native_width_px=8256,
        sensor_width_mm=35.9,
        source="Nikon D850 specifications: 35.9 x 23.9 mm CMOS sensor (FX), image size L 8256x5504",
    ),
    SensorEntry(
        name="sony-a7-iii",
        make="SONY",
        models=("ILCE-7M3",),
        native_width_px=6000,
        sensor_width_mm=35.6,
        source="Sony α7 III (ILCE-7M3) specifications: 35.6 x 23.8 mm Exmor R CMOS sensor, image size L 6000x4000",
    ),
)


def _norm(s: str | None) -> str:
    return " ".join(str(s or "").replace("\x00", " ").split()).casefold()


def _focal_matches(entry: SensorEntry, focal_length_mm: float | None) -> bool:
    if entry.focal_length_mm is None or focal_length_mm is None:
        return True
    return abs(float(focal_length_mm) - entry.focal_length_mm) <= max(0.1, 0.02 * entry.focal_length_mm)


def find_model(make: str | None, model: str | None) -> list[SensorEntry]:
    """Every entry for this Make / Model (case-insensitive, whitespace-normalised), whatever the focal length."""
    mk, md = _norm(make), _norm(model)
    if not mk or not md:
        return []
    return [e for e in SENSORS if _norm(e.make) == mk and md in {_norm(m) for m in e.models}]


def lookup_sensor(make: str | None, model: str | None, focal_length_mm: float | None = None) -> SensorEntry | None:
    """The sensor-table entry for an EXIF Make / Model, or None.

    Make and Model match case-insensitively after collapsing whitespace. For a phone entry (one that names its
    module's focal length) a given ``focal_length_mm`` must match that module's EXIF FocalLength (within 2 %, at
    least 0.1 mm), so that photos from a phone's other cameras (ultra-wide, telephoto) find nothing; without a
    focal length the main camera's entry is returned.
    """
    for entry in find_model(make, model):
        if _focal_matches(entry, focal_length_mm):
            return entry
    return None


def pixel_pitch_um(entry: SensorEntry, image_width_px: int, image_height_px: int | None = None) -> float:
    """The entry's pixel pitch (µm) for an image ``image_width_px`` wide: pitch at native width × native width /
    image width (a downscaled image has a larger pitch).

    With ``image_height_px`` the image's long side is used instead of its width (every table entry is a landscape
    sensor), so that a photo stored or loaded in portrait orientation gets the same pitch.
    """
    w = int(image_width_px)
    if image_height_px is not None:
        w = max(w, int(image_height_px))
    if w <= 0:
        raise DefocusError(f"image width must be a positive number of pixels, got {image_width_px!r}")
    return entry.pitch_at_native_um * entry.native_width_px / w
