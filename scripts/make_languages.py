"""Generate src/aetheris/data/languages.json, the language registry's data file.

Run once (`python scripts/make_languages.py`); the committed JSON is the source of truth and the
tests read only the JSON. This script exists so that families follow from groups (one table, no
inconsistent pairs) and so that each row is one readable line. Written offline from:
Glottolog 5 / WALS (genealogy), the ISO 639-3 code tables (codes, macro-languages), the FLORES-200
README (variety codes), Joshi et al. 2020 lang2tax.txt (tiers) and the Tiny Aya model card
(coverage, regions). See SOURCES below.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "aetheris" / "data" / "languages.json"

SOURCES = {
    "coverage_and_regions": (
        "Tiny Aya model card (CohereLabs, 2026): the 70 covered languages and their five regions "
        "(Europe, Asia-Pacific, Africa, South Asia, West Asia)."
    ),
    "codes": (
        "ISO 639-3 code tables (SIL, iso-639-3.tab and macro-language mappings) for ISO 639-1/-3 "
        "codes; FLORES-200 README (NLLB Team 2022, facebookresearch/flores) for variety codes; "
        "the variety list itself is the SIB-200 annotated/ directory (Adelani et al. 2023)."
    ),
    "genealogy": (
        "Glottolog 5 (Hammarstrom et al.) top-level families and subgroups, with WALS genera "
        "(Dryer & Haspelmath 2013) as the finer group. Glottolog's 'Atlantic-Congo' is named by "
        "the traditional phylum 'Niger-Congo' (as in WALS); Mande, Nilotic and Saharan stay "
        "separate families as in Glottolog. Creoles form a 'Creole' family grouped by lexifier "
        "(WALS/APiCS practice)."
    ),
    "tiers": (
        "Joshi, Santy, Budhiraja, Bali & Choudhury 2020, 'The State and Fate of Linguistic "
        "Diversity and Inclusion in the NLP World' (ACL), classes 0-5 from lang2tax.txt "
        "(https://microsoft.github.io/linguisticdiversity/assets/lang2tax.txt)."
    ),
}

NOTES = [
    "Codes: 'code' is ISO 639-1 where the language has one, else ISO 639-3; the ISO 639-1 code of a "
    "macro-language goes to the variety FLORES-200 uses for it (sw->swh_Latn, ar->arb_Arab, "
    "fa->pes_Arab, ms->zsm_Latn, ne->npi_Deva, lv->lvs_Latn, mg->plt_Latn, qu->quy_Latn ...). "
    "iso639_3 is the code inside the FLORES code; macro-language and ISO 639-2/B codes are 'aliases'.",
    "Chinese: 'zh', 'zho', 'cmn' resolve to zh-Hans (XCOPA and MGSM 'zh' are Simplified Mandarin).",
    "Varieties with several scripts in SIB-200 are keyed iso3_Script (ace_Arab, ace_Latn ...); the "
    "bare ISO code is then ambiguous unless an alias names one entry (arb -> ar).",
    "Tiers: classes read from lang2tax.txt by language name. Where FLORES uses an individual code for "
    "the language Joshi et al. list by its common name (Swahili->swh, Persian->pes, Malay->zsm, "
    "Nepali->npi, Latvian->lvs, Malagasy->plt, Oromo->gaz, Mongolian->khk, Uzbek->uzn, "
    "Albanian->als, Quechua->quy, Estonian->est), that class is used. Script variants share the "
    "language's class. Varieties not found in lang2tax get class 0, the paper's class for languages "
    "with virtually no resources. Entries with a 'note' were uncertain.",
    "Regions: Tiny Aya's region for the 70. Other varieties get the same labels by where they are "
    "mainly spoken (Central Asia, Oceania and South-East Asia -> Asia-Pacific; Caucasus, Arabic "
    "varieties, Iranian languages of Iran/Afghanistan -> West Asia); the Americas and constructed "
    "languages -> Other.",
]

# group -> top-level family. Every row names a group from here, so families cannot drift.
GROUPS = {
    "Romance": "Indo-European", "Germanic": "Indo-European", "Slavic": "Indo-European",
    "Baltic": "Indo-European", "Celtic": "Indo-European", "Greek": "Indo-European",
    "Albanian": "Indo-European", "Armenian": "Indo-European", "Indo-Aryan": "Indo-European",
    "Iranian": "Indo-European",
    "Finnic": "Uralic", "Ugric": "Uralic",
    "Basque": "Basque",
    "Kartvelian": "Kartvelian",
    "Semitic": "Afro-Asiatic", "Chadic": "Afro-Asiatic", "Cushitic": "Afro-Asiatic",
    "Berber": "Afro-Asiatic",
    "Oghuz": "Turkic", "Kipchak": "Turkic", "Karluk": "Turkic",
    "Mongolic": "Mongolic",
    "Sinitic": "Sino-Tibetan", "Lolo-Burmese": "Sino-Tibetan", "Tibetic": "Sino-Tibetan",
    "Kuki-Chin": "Sino-Tibetan", "Sal": "Sino-Tibetan", "Meitei": "Sino-Tibetan",
    "Vietic": "Austroasiatic", "Khmeric": "Austroasiatic", "Munda": "Austroasiatic",
    "Tai": "Tai-Kadai",
    "Greater Central Philippine": "Austronesian", "Northern Luzon": "Austronesian",
    "Malayic": "Austronesian", "Javanese": "Austronesian", "Sundanese": "Austronesian",
    "Barito": "Austronesian", "Chamic": "Austronesian", "Bali-Sasak-Sumbawa": "Austronesian",
    "South Sulawesi": "Austronesian", "Oceanic": "Austronesian",
    "Korean": "Koreanic",
    "Japanese": "Japonic",
    "Dravidian South": "Dravidian", "Dravidian South-Central": "Dravidian",
    "Bantu": "Niger-Congo", "Defoid": "Niger-Congo", "Igboid": "Niger-Congo",
    "Atlantic": "Niger-Congo", "Kwa": "Niger-Congo", "Gur": "Niger-Congo",
    "Ubangian": "Niger-Congo",
    "Western Mande": "Mande",
    "Western Nilotic": "Nilotic",
    "Western Saharan": "Saharan",
    "Quechua II": "Quechuan",
    "Aymaran": "Aymaran",
    "Tupi-Guarani": "Tupian",
    "English-based Creole": "Creole", "French-based Creole": "Creole",
    "Portuguese-based Creole": "Creole", "Iberian-based Creole": "Creole",
    "Constructed": "Constructed",
}

# The 70 Tiny Aya languages by region, as the model card lists them.
TINY_AYA = {
    "Europe": "ca gl nl da fi cs pt fr lt sk eu en sv pl es sl uk el nb ro sr de it ru ga hu bg hr et lv cy",
    "Asia-Pacific": "zh-Hant yue vi tl jv km th my ms ko lo id zh-Hans ja",
    "Africa": "zu am ha ig sw xh wo sn yo pcm mg",
    "South Asia": "te mr bn ta hi pa gu ur ne",
    "West Asia": "ar mt tr he fa",
}

# One row per variety:
# flores (or iso3 when FLORES has none) | code | iso639_1 | name | group | region | tier | aliases
# region/tier of the 70 must agree with TINY_AYA (checked below). Aliases: macro-language codes,
# ISO 639-2/B codes and common synonyms that should resolve to this entry.
ROWS = """
ace_Arab|ace_Arab||Acehnese (Arabic script)|Chamic|Asia-Pacific|0|
ace_Latn|ace_Latn||Acehnese (Latin script)|Chamic|Asia-Pacific|0|
acm_Arab|acm||Mesopotamian Arabic|Semitic|West Asia|0|
acq_Arab|acq||Ta'izzi-Adeni Arabic|Semitic|West Asia|0|
aeb_Arab|aeb||Tunisian Arabic|Semitic|West Asia|0|
afr_Latn|af|af|Afrikaans|Germanic|Africa|3|
ajp_Arab|ajp||South Levantine Arabic|Semitic|West Asia|0|
aka_Latn|ak|ak|Akan|Kwa|Africa|1|
als_Latn|sq|sq|Albanian (Tosk)|Albanian|Europe|1|sqi alb
amh_Ethi|am|am|Amharic|Semitic|Africa|2|
apc_Arab|apc||North Levantine Arabic|Semitic|West Asia|0|
arb_Arab|ar|ar|Arabic (Modern Standard)|Semitic|West Asia|5|ara arb
arb_Latn|arb_Latn||Arabic (Modern Standard, romanized)|Semitic|West Asia|5|
ars_Arab|ars||Najdi Arabic|Semitic|West Asia|0|
ary_Arab|ary||Moroccan Arabic|Semitic|West Asia|0|
arz_Arab|arz||Egyptian Arabic|Semitic|West Asia|3|
asm_Beng|as|as|Assamese|Indo-Aryan|South Asia|1|
ast_Latn|ast||Asturian|Romance|Europe|1|
awa_Deva|awa||Awadhi|Indo-Aryan|South Asia|0|
ayr_Latn|ay|ay|Aymara (Central)|Aymaran|Other|1|aym
azb_Arab|azb||South Azerbaijani|Oghuz|West Asia|1|
azj_Latn|az|az|Azerbaijani (North)|Oghuz|West Asia|1|aze
bak_Cyrl|ba|ba|Bashkir|Kipchak|Europe|1|
bam_Latn|bm|bm|Bambara|Western Mande|Africa|1|
ban_Latn|ban||Balinese|Bali-Sasak-Sumbawa|Asia-Pacific|0|
bel_Cyrl|be|be|Belarusian|Slavic|Europe|3|
bem_Latn|bem||Bemba|Bantu|Africa|0|
ben_Beng|bn|bn|Bengali|Indo-Aryan|South Asia|3|
bho_Deva|bho||Bhojpuri|Indo-Aryan|South Asia|1|
bjn_Arab|bjn_Arab||Banjar (Arabic script)|Malayic|Asia-Pacific|1|
bjn_Latn|bjn_Latn||Banjar (Latin script)|Malayic|Asia-Pacific|1|
bod_Tibt|bo|bo|Tibetan (Standard)|Tibetic|Asia-Pacific|1|tib
bos_Latn|bs|bs|Bosnian|Slavic|Europe|3|
bug_Latn|bug||Buginese|South Sulawesi|Asia-Pacific|1|
bul_Cyrl|bg|bg|Bulgarian|Slavic|Europe|3|
cat_Latn|ca|ca|Catalan|Romance|Europe|4|
ceb_Latn|ceb||Cebuano|Greater Central Philippine|Asia-Pacific|3|
ces_Latn|cs|cs|Czech|Slavic|Europe|4|cze
cjk_Latn|cjk||Chokwe|Bantu|Africa|0|
ckb_Arab|ckb||Central Kurdish (Sorani)|Iranian|West Asia|1|
crh_Latn|crh||Crimean Tatar|Kipchak|Europe|1|
cym_Latn|cy|cy|Welsh|Celtic|Europe|1|wel
dan_Latn|da|da|Danish|Germanic|Europe|3|
deu_Latn|de|de|German|Germanic|Europe|5|ger
dik_Latn|dik||Southwestern Dinka|Western Nilotic|Africa|0|din
dyu_Latn|dyu||Dyula|Western Mande|Africa|0|
dzo_Tibt|dz|dz|Dzongkha|Tibetic|South Asia|1|
ell_Grek|el|el|Greek (Modern)|Greek|Europe|3|gre
eng_Latn|en|en|English|Germanic|Europe|5|
epo_Latn|eo|eo|Esperanto|Constructed|Other|1|
est_Latn|et|et|Estonian|Finnic|Europe|3|ekk
eus_Latn|eu|eu|Basque|Basque|Europe|4|baq
ewe_Latn|ee|ee|Ewe|Kwa|Africa|1|
fao_Latn|fo|fo|Faroese|Germanic|Europe|1|
fij_Latn|fj|fj|Fijian|Oceanic|Asia-Pacific|1|
fin_Latn|fi|fi|Finnish|Finnic|Europe|4|
fon_Latn|fon||Fon|Kwa|Africa|0|
fra_Latn|fr|fr|French|Romance|Europe|5|fre
fur_Latn|fur||Friulian|Romance|Europe|1|
fuv_Latn|ff|ff|Fulfulde (Nigerian)|Atlantic|Africa|0|ful
gaz_Latn|om|om|Oromo (West Central)|Cushitic|Africa|1|orm
gla_Latn|gd|gd|Scottish Gaelic|Celtic|Europe|1|
gle_Latn|ga|ga|Irish|Celtic|Europe|2|
glg_Latn|gl|gl|Galician|Romance|Europe|3|
grn_Latn|gn|gn|Guarani|Tupi-Guarani|Other|1|
guj_Gujr|gu|gu|Gujarati|Indo-Aryan|South Asia|1|
hat_Latn|ht|ht|Haitian Creole|French-based Creole|Other|2|
hau_Latn|ha|ha|Hausa|Chadic|Africa|2|
heb_Hebr|he|he|Hebrew|Semitic|West Asia|3|
hin_Deva|hi|hi|Hindi|Indo-Aryan|South Asia|4|
hne_Deva|hne||Chhattisgarhi|Indo-Aryan|South Asia|0|
hrv_Latn|hr|hr|Croatian|Slavic|Europe|4|
hun_Latn|hu|hu|Hungarian|Ugric|Europe|4|
hye_Armn|hy|hy|Armenian|Armenian|West Asia|1|arm
ibo_Latn|ig|ig|Igbo|Igboid|Africa|1|
ilo_Latn|ilo||Ilocano|Northern Luzon|Asia-Pacific|1|
ind_Latn|id|id|Indonesian|Malayic|Asia-Pacific|3|
isl_Latn|is|is|Icelandic|Germanic|Europe|2|ice
ita_Latn|it|it|Italian|Romance|Europe|4|
jav_Latn|jv|jv|Javanese|Javanese|Asia-Pacific|1|
jpn_Jpan|ja|ja|Japanese|Japanese|Asia-Pacific|5|
kab_Latn|kab||Kabyle|Berber|Africa|1|
kac_Latn|kac||Jingpho (Kachin)|Sal|Asia-Pacific|0|
kam_Latn|kam||Kamba|Bantu|Africa|0|
kan_Knda|kn|kn|Kannada|Dravidian South|South Asia|1|
kas_Arab|kas_Arab|ks|Kashmiri (Arabic script)|Indo-Aryan|South Asia|1|
kas_Deva|kas_Deva|ks|Kashmiri (Devanagari)|Indo-Aryan|South Asia|1|
kat_Geor|ka|ka|Georgian|Kartvelian|West Asia|3|geo
kaz_Cyrl|kk|kk|Kazakh|Kipchak|Asia-Pacific|3|
kbp_Latn|kbp||Kabiye|Gur|Africa|0|
kea_Latn|kea||Kabuverdianu|Portuguese-based Creole|Africa|0|
khk_Cyrl|mn|mn|Mongolian (Halh)|Mongolic|Asia-Pacific|1|mon
khm_Khmr|km|km|Khmer|Khmeric|Asia-Pacific|1|
kik_Latn|ki|ki|Kikuyu|Bantu|Africa|1|
kin_Latn|rw|rw|Kinyarwanda|Bantu|Africa|1|
kir_Cyrl|ky|ky|Kyrgyz|Kipchak|Asia-Pacific|1|
kmb_Latn|kmb||Kimbundu|Bantu|Africa|0|
kmr_Latn|ku|ku|Northern Kurdish (Kurmanji)|Iranian|West Asia|1|kur
knc_Arab|knc_Arab|kr|Central Kanuri (Arabic script)|Western Saharan|Africa|0|
knc_Latn|knc_Latn|kr|Central Kanuri (Latin script)|Western Saharan|Africa|0|
kon_Latn|kg|kg|Kikongo|Bantu|Africa|1|
kor_Hang|ko|ko|Korean|Korean|Asia-Pacific|4|
lao_Laoo|lo|lo|Lao|Tai|Asia-Pacific|2|
lij_Latn|lij||Ligurian|Romance|Europe|1|
lim_Latn|li|li|Limburgish|Germanic|Europe|0|
lin_Latn|ln|ln|Lingala|Bantu|Africa|1|
lit_Latn|lt|lt|Lithuanian|Baltic|Europe|3|
lmo_Latn|lmo||Lombard|Romance|Europe|1|
ltg_Latn|ltg||Latgalian|Baltic|Europe|1|
ltz_Latn|lb|lb|Luxembourgish|Germanic|Europe|1|
lua_Latn|lua||Luba-Kasai|Bantu|Africa|0|
lug_Latn|lg|lg|Ganda (Luganda)|Bantu|Africa|1|
luo_Latn|luo||Luo (Dholuo)|Western Nilotic|Africa|0|
lus_Latn|lus||Mizo|Kuki-Chin|South Asia|0|
lvs_Latn|lv|lv|Latvian (Standard)|Baltic|Europe|3|lav
mag_Deva|mag||Magahi|Indo-Aryan|South Asia|0|
mai_Deva|mai||Maithili|Indo-Aryan|South Asia|1|
mal_Mlym|ml|ml|Malayalam|Dravidian South|South Asia|1|
mar_Deva|mr|mr|Marathi|Indo-Aryan|South Asia|2|
min_Arab|min_Arab||Minangkabau (Arabic script)|Malayic|Asia-Pacific|1|
min_Latn|min_Latn||Minangkabau (Latin script)|Malayic|Asia-Pacific|1|
mkd_Cyrl|mk|mk|Macedonian|Slavic|Europe|1|mac
mlt_Latn|mt|mt|Maltese|Semitic|West Asia|2|
mni_Beng|mni||Meitei (Manipuri)|Meitei|South Asia|1|
mos_Latn|mos||Mossi (Moore)|Gur|Africa|0|
mri_Latn|mi|mi|Maori|Oceanic|Asia-Pacific|1|mao
mya_Mymr|my|my|Burmese|Lolo-Burmese|Asia-Pacific|1|bur
nld_Latn|nl|nl|Dutch|Germanic|Europe|4|dut
nno_Latn|nn|nn|Norwegian Nynorsk|Germanic|Europe|1|
nob_Latn|nb|nb|Norwegian Bokmål|Germanic|Europe|1|no nor
npi_Deva|ne|ne|Nepali|Indo-Aryan|South Asia|1|nep
nqo_Nkoo|nqo||N'Ko (Manding)|Western Mande|Africa|0|
nso_Latn|nso||Northern Sotho|Bantu|Africa|0|
nus_Latn|nus||Nuer|Western Nilotic|Africa|0|
nya_Latn|ny|ny|Chichewa (Nyanja)|Bantu|Africa|1|
oci_Latn|oc|oc|Occitan|Romance|Europe|1|
ory_Orya|or|or|Odia|Indo-Aryan|South Asia|1|ori
pag_Latn|pag||Pangasinan|Northern Luzon|Asia-Pacific|1|
pan_Guru|pa|pa|Punjabi (Eastern)|Indo-Aryan|South Asia|2|
pap_Latn|pap||Papiamento|Iberian-based Creole|Other|1|
pbt_Arab|ps|ps|Pashto (Southern)|Iranian|West Asia|1|pus
pes_Arab|fa|fa|Persian (Western Farsi)|Iranian|West Asia|4|fas per
plt_Latn|mg|mg|Malagasy (Plateau)|Barito|Africa|1|mlg
pol_Latn|pl|pl|Polish|Slavic|Europe|4|
por_Latn|pt|pt|Portuguese|Romance|Europe|4|
prs_Arab|prs||Dari|Iranian|West Asia|0|
quy_Latn|qu|qu|Quechua (Ayacucho)|Quechua II|Other|1|que
ron_Latn|ro|ro|Romanian|Romance|Europe|3|rum
run_Latn|rn|rn|Kirundi|Bantu|Africa|1|
rus_Cyrl|ru|ru|Russian|Slavic|Europe|4|
sag_Latn|sg|sg|Sango|Ubangian|Africa|1|
san_Deva|sa|sa|Sanskrit|Indo-Aryan|South Asia|2|
sat_Olck|sat||Santali|Munda|South Asia|1|
scn_Latn|scn||Sicilian|Romance|Europe|1|
shn_Mymr|shn||Shan|Tai|Asia-Pacific|0|
sin_Sinh|si|si|Sinhala|Indo-Aryan|South Asia|0|
slk_Latn|sk|sk|Slovak|Slavic|Europe|3|slo
slv_Latn|sl|sl|Slovenian|Slavic|Europe|3|
smo_Latn|sm|sm|Samoan|Oceanic|Asia-Pacific|1|
sna_Latn|sn|sn|Shona|Bantu|Africa|1|
snd_Arab|sd|sd|Sindhi|Indo-Aryan|South Asia|1|
som_Latn|so|so|Somali|Cushitic|Africa|1|
sot_Latn|st|st|Southern Sotho|Bantu|Africa|0|
spa_Latn|es|es|Spanish|Romance|Europe|5|
srd_Latn|sc|sc|Sardinian|Romance|Europe|1|
srp_Cyrl|sr|sr|Serbian|Slavic|Europe|4|
ssw_Latn|ss|ss|Swati|Bantu|Africa|1|
sun_Latn|su|su|Sundanese|Sundanese|Asia-Pacific|1|
swe_Latn|sv|sv|Swedish|Germanic|Europe|4|
swh_Latn|sw|sw|Swahili|Bantu|Africa|2|swa
szl_Latn|szl||Silesian|Slavic|Europe|1|
tam_Taml|ta|ta|Tamil|Dravidian South|South Asia|3|
taq_Latn|taq_Latn||Tamasheq (Latin script)|Berber|Africa|0|
taq_Tfng|taq_Tfng||Tamasheq (Tifinagh)|Berber|Africa|0|
tat_Cyrl|tt|tt|Tatar|Kipchak|Europe|1|
tel_Telu|te|te|Telugu|Dravidian South-Central|South Asia|1|
tgk_Cyrl|tg|tg|Tajik|Iranian|Asia-Pacific|1|
tgl_Latn|tl|tl|Tagalog|Greater Central Philippine|Asia-Pacific|3|fil
tha_Thai|th|th|Thai|Tai|Asia-Pacific|3|
tir_Ethi|ti|ti|Tigrinya|Semitic|Africa|2|
tpi_Latn|tpi||Tok Pisin|English-based Creole|Asia-Pacific|1|
tsn_Latn|tn|tn|Tswana|Bantu|Africa|2|
tso_Latn|ts|ts|Tsonga|Bantu|Africa|1|
tuk_Latn|tk|tk|Turkmen|Oghuz|Asia-Pacific|1|
tum_Latn|tum||Tumbuka|Bantu|Africa|1|
tur_Latn|tr|tr|Turkish|Oghuz|West Asia|4|
twi_Latn|tw|tw|Twi|Kwa|Africa|1|
tzm_Tfng|tzm||Central Atlas Tamazight|Berber|Africa|0|
uig_Arab|ug|ug|Uyghur|Karluk|Asia-Pacific|1|
ukr_Cyrl|uk|uk|Ukrainian|Slavic|Europe|3|
umb_Latn|umb||Umbundu|Bantu|Africa|0|
urd_Arab|ur|ur|Urdu|Indo-Aryan|South Asia|3|
uzn_Latn|uz|uz|Uzbek (Northern)|Karluk|Asia-Pacific|3|uzb
vec_Latn|vec||Venetian|Romance|Europe|1|
vie_Latn|vi|vi|Vietnamese|Vietic|Asia-Pacific|4|
war_Latn|war||Waray|Greater Central Philippine|Asia-Pacific|1|
wol_Latn|wo|wo|Wolof|Atlantic|Africa|2|
xho_Latn|xh|xh|Xhosa|Bantu|Africa|2|
ydd_Hebr|yi|yi|Yiddish (Eastern)|Germanic|Europe|1|yid
yor_Latn|yo|yo|Yoruba|Defoid|Africa|2|
yue_Hant|yue||Cantonese|Sinitic|Asia-Pacific|1|
zho_Hans|zh-Hans|zh|Chinese (Simplified)|Sinitic|Asia-Pacific|5|zh zho cmn chi
zho_Hant|zh-Hant|zh|Chinese (Traditional)|Sinitic|Asia-Pacific|5|
zsm_Latn|ms|ms|Malay (Standard)|Malayic|Asia-Pacific|3|msa may
zul_Latn|zu|zu|Zulu|Bantu|Africa|2|
pcm|pcm||Nigerian Pidgin|English-based Creole|Africa|0|
"""

# Choices a reader of a research report should know were judgement calls.
ENTRY_NOTES = {
    "hat_Latn": "Joshi class 2 (listed as Haitian); some name matchings give 1.",
    "pbt_Arab": "Joshi class of 'Pashto' applied to Southern Pashto.",
    "yue_Hant": "Cantonese class 1 is a best-effort match of lang2tax names (Cantonese/Yue).",
    "pcm": "Not in FLORES-200/SIB-200; not found in lang2tax, so class 0. English-lexifier "
    "expanded pidgin/creole (Glottolog: Nigerian Pidgin).",
    "quy_Latn": "XCOPA 'qu' is Southern Quechua; FLORES-200's only Quechua is Ayacucho (quy_Latn).",
    "prs_Arab": "Dari is not listed separately in lang2tax; Persian's class 4 is kept for pes only.",
    "arb_Latn": "Romanized Modern Standard Arabic; tier is that of Arabic.",
    "fuv_Latn": "ISO 639-1 'ff' (Fula macro-language) given to the only Fula variety in FLORES-200.",
    "kmr_Latn": "ISO 639-1 'ku' (Kurdish macro-language) given to Kurmanji, as in CLDR.",
    "azj_Latn": "ISO 639-1 'az' given to North Azerbaijani, the FLORES-200 standard variety.",
}


def build() -> dict:
    regions = {code: region for region, codes in TINY_AYA.items() for code in codes.split()}
    entries = []
    for line in ROWS.strip().splitlines():
        flores, code, iso1, name, group, region, tier, aliases = line.split("|")
        if "_" in flores:
            iso3, script = flores.split("_")
        else:  # no FLORES-200 variety (pcm)
            iso3, script, flores = flores, "Latn", None
        if group not in GROUPS:
            raise ValueError(f"{code}: unknown group {group!r}")
        covered = code in regions
        if covered and regions[code] != region:
            raise ValueError(f"{code}: region {region!r} but Tiny Aya lists {regions[code]!r}")
        entry = {
            "code": code,
            "iso639_1": iso1 or None,
            "iso639_3": iso3,
            "flores": flores,
            "name": name,
            "family": GROUPS[group],
            "group": group,
            "script": script,
            "region": region,
            "tier": int(tier),
            "tiny_aya": covered,
            "aliases": aliases.split(),
        }
        note = ENTRY_NOTES.get(flores or iso3)
        if note:
            entry["note"] = note
        entries.append(entry)
    missing = set(regions) - {e["code"] for e in entries}
    if missing:
        raise ValueError(f"Tiny Aya languages without a row: {sorted(missing)}")
    return {
        "schema": "aetheris.languages/1",
        "sources": SOURCES,
        "notes": NOTES,
        "languages": entries,
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
