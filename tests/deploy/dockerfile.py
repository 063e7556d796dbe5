"""The Dockerfile, bin/build-wasm and the settings' defaults as the deploy tests read them: parsed, never built.

A multi-stage Dockerfile: what runs in a pod is the last stage (the image), the stages before it only build parts
of it. No Docker engine is needed for any of this.
"""

import ast
import fnmatch
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BUILD_WASM = ROOT / "bin" / "build-wasm"


@dataclass(frozen=True)
class Stage:
    """One FROM and the instructions under it, in order: (INSTRUCTION, its arguments as written)."""

    image: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]

    def arguments(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]

    @property
    def workdir(self) -> PurePosixPath:
        """Where relative paths of this stage resolve (its last WORKDIR; this Dockerfile sets one per stage)."""
        (workdir,) = self.arguments("WORKDIR")
        return PurePosixPath(workdir)

    @property
    def environment(self) -> dict[str, str]:
        """The ENV lines' KEY=VALUE pairs: what every process of this stage's image starts with."""
        return dict(pair.split("=", 1) for line in self.arguments("ENV") for pair in shlex.split(line))

    def index(self, instruction: str, arguments: str) -> int:
        return self.instructions.index((instruction, arguments))


def instructions(text: str) -> list[tuple[str, str]]:
    """Docker's reading: comment lines dropped (inside a continued line too), then continued lines joined (with one
    space where they join)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\s*\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


@cache
def stages() -> tuple[Stage, ...]:
    found: list[Stage] = []
    for instruction, arguments in instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            image, _, name = arguments.partition(" AS ")
            found.append(Stage(image=image.strip(), name=name.strip() or None, instructions=()))
        else:
            last = found[-1]
            found[-1] = Stage(last.image, last.name, (*last.instructions, (instruction, arguments)))
    return tuple(found)


def image() -> Stage:
    """The stage that is the image every pod runs: the last one."""
    return stages()[-1]


def stage(name: str) -> Stage:
    (found,) = [candidate for candidate in stages() if candidate.name == name]
    return found


def shell_array(name: str, source: Path = BUILD_WASM) -> list[str]:
    """The words of a bash array assigned in `source` (`name=(a b "c d")`, possibly over several lines)."""
    match = re.search(rf"^{name}=\((.*?)\)", source.read_text(), flags=re.MULTILINE | re.DOTALL)
    if match is None:
        raise LookupError(f"{source} assigns no array {name}")
    return shlex.split(match.group(1), comments=True)


def shell_variable(name: str, source: Path = BUILD_WASM) -> str:
    (value,) = re.findall(rf"^{name}=(\S+)$", source.read_text(), flags=re.MULTILINE)
    return value


def setting_default(name: str) -> str:
    """The default proj/settings.py gives environment variable `name` (`os.environ.get(name, DEFAULT)`)."""
    for node in ast.walk(ast.parse((ROOT / "proj" / "settings.py").read_text())):
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "os.environ.get"
            and len(node.args) == 2
            and all(isinstance(argument, ast.Constant) for argument in node.args)
            and node.args[0].value == name
        ):
            return node.args[1].value
    raise LookupError(f"proj/settings.py reads no {name} with a default")


def path_in_image(setting: str) -> PurePosixPath:
    """Where a `BASE_DIR / os.environ.get(NAME, "relative/default")` setting points in the image: BASE_DIR is the
    checkout's root, which the image copies to its WORKDIR."""
    return image().workdir / setting_default(setting)


def is_excluded_from_context(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the checkout) out of the build context: a pattern matches it
    or one of its parent directories (the patterns this .dockerignore uses: names, and `**/` for any depth)."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [pattern for pattern in patterns if pattern and not pattern.startswith("#")]
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("!"):
            raise ValueError(f"an exception pattern ({pattern}) needs a real .dockerignore matcher")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(PurePosixPath(prefix).name, pattern[3:])
            ):
                return True
    return False
