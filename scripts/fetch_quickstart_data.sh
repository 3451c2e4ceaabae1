#!/usr/bin/env bash
# Real English text for the quickstart: the fortune cookies of Debian's `fortunes` package,
# one fortune a document, as data-cache/fortunes/{train,validation}.jsonl (every 20th fortune
# goes to validation). Does nothing when both files exist.
set -euo pipefail
cd "$(dirname "$0")/.."

out=data-cache/fortunes
if [[ -s $out/train.jsonl && -s $out/validation.jsonl ]]; then
    echo "fortunes: already in $out ($(wc -l <"$out/train.jsonl") train, $(wc -l <"$out/validation.jsonl") validation documents)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sudo_if_needed() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

echo "fortunes: downloading Debian's fortunes package"
if ! (cd "$work" && apt-get download fortunes >/dev/null 2>&1); then
    echo "fortunes: no package list has it yet; running apt-get update"
    sudo_if_needed apt-get update >/dev/null
    (cd "$work" && apt-get download fortunes >/dev/null)
fi
dpkg-deb -x "$work"/fortunes_*.deb "$work/root"

mkdir -p "$out"
python3 - "$work/root/usr/share/games/fortunes" "$out" <<'EOF'
import json, os, re, sys

source, out = sys.argv[1], sys.argv[2]
fortunes = []
for name in sorted(os.listdir(source)):
    path = os.path.join(source, name)
    # .dat files are strfile indexes; .u8 files are links to the text files.
    if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, encoding="utf-8", errors="replace") as file:
        text = file.read()
    # Some fortunes are bold or underlined by overstriking (X\bX, ___\b\b\bTHE): erase each
    # character a backspace goes back over, then drop the other control characters (bells).
    while True:
        erased = re.sub("[^\b\n]\b", "", text)
        if erased == text:
            break
        text = erased
    text = re.sub("[\x00-\x08\x0b-\x1f\x7f]", "", text)
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        entry = entry.strip("\n").rstrip()
        if entry.strip():
            fortunes.append(entry)

splits = {"train": [], "validation": []}
for index, fortune in enumerate(fortunes):
    splits["validation" if index % 20 == 19 else "train"].append(fortune)
for split, texts in splits.items():
    temporary = os.path.join(out, f".{split}.jsonl.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        for text in texts:
            file.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    os.replace(temporary, os.path.join(out, f"{split}.jsonl"))
    size = sum(len(text.encode("utf-8")) for text in texts)
    print(f"fortunes: wrote {out}/{split}.jsonl ({len(texts)} documents, {size} bytes of text)")
EOF
