"""The municipalities a case may be transferred to: Albania's 61 bashki (the 2015 territorial reform,
Ura Vajgurore renamed Dimal in 2018) as ASCII slugs. `MKR_INTAKE_MUNICIPALITIES` replaces the list
(another country's profile, or a test's own slugs)."""

from __future__ import annotations

ALBANIA: tuple[str, ...] = (
    "belsh", "berat", "bulqize", "cerrik", "delvine", "devoll", "diber", "dimal", "divjake", "dropull",
    "durres", "elbasan", "fier", "finiq", "fushe-arrez", "gjirokaster", "gramsh", "has", "himare", "kamez",
    "kavaje", "kelcyre", "klos", "kolonje", "konispol", "korce", "kruje", "kucove", "kukes", "kurbin",
    "lezhe", "libohove", "librazhd", "lushnje", "malesi-e-madhe", "maliq", "mallakaster", "mat", "memaliaj",
    "mirdite", "patos", "peqin", "permet", "pogradec", "polican", "prrenjas", "puke", "pustec", "roskovec",
    "rrogozhine", "sarande", "selenice", "shijak", "shkoder", "skrapar", "tepelene", "tirane", "tropoje",
    "vau-i-dejes", "vlore", "vore",
)
