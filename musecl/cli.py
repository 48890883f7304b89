"""The ``musecl`` command line. Every subcommand is a thin wrapper over a library function.

Each subcommand imports what it uses when it runs, so ``musecl --help`` does not wait seconds
for torch, torchvision and scikit-learn."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def _validate(args: argparse.Namespace) -> int:
    from musecl.city import load_city, validate_city

    problems = validate_city(args.city)
    if problems:
        print(f"{args.city}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        city = load_city(args.city)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{args.city}: valid. {city!r}")
    if city.pois is not None and len(city.pois):
        from musecl.encoders.text import has_text
        if not has_text(city.pois):  # the method runs, but its POI vectors mean something else
            print("note: no POI has text beyond its category name, so MuseCL's POI vectors (eq. 7) learn "
                  "each category from the categories it shares regions with (region co-occurrence, "
                  "chapter 5), not from POI text")
    return 0


def _toy_city(args: argparse.Namespace) -> int:
    from musecl.datasets.toy import make_toy_city

    out = make_toy_city(args.out, n_regions=args.regions, seed=args.seed, image_size=args.image_size)
    print(f"wrote toy city to {out}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from musecl.datasets.sources import fetch

    paths = fetch(args.name, data_dir=args.data_dir, download=not args.offline)
    roots = sorted({str(p)[: -len(f)].rstrip("/") for f, p in paths.items()})
    print(f"{args.name}: {len(paths)} files verified (sha256) in {', '.join(roots)}")
    return 0


def _city(args: argparse.Namespace) -> int:
    from musecl.runner import make_named_city

    out = make_named_city(args.name, args.out, data_dir=args.data_dir)
    print(f"wrote the {args.name} city folder to {out}; check it with `musecl validate {out}`")
    return 0


def _book(args: argparse.Namespace) -> int:
    from musecl.book import build

    html = build(city=args.city, params_file=args.params, out=args.out, only=args.only, force=args.force,
                 at_once=args.at_once)
    if (html / "index.html").is_file():
        print(f"book rendered to {html}/index.html")
    return 0


def _run(args: argparse.Namespace) -> int:
    from musecl.city import TooFewRegionsWarning
    from musecl.config import RunConfig
    from musecl.runner import resolve_city, run, summary_json

    config = RunConfig.from_yaml(args.params, device=args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TooFewRegionsWarning)  # run raises it as an error, said once
        city = resolve_city(args.city)  # a named city ("toy") is generated here, once
    results = run(city, args.out, config, methods=args.methods, cache_dir=args.cache)
    print(f"wrote {args.out}/results.csv ({len(results)} rows)")
    headline = city.meta.headline_indicators()
    print(f"mean R2 over the headline indicators ({', '.join(headline)}):")
    print(summary_json(results, headline))
    return 0


def _methods(args: argparse.Namespace) -> int:
    from musecl.config import RunConfig
    from musecl.runner import methods_table, resolve_city

    city = resolve_city(args.city) if args.city is not None else None
    table = methods_table(city, RunConfig.from_yaml(args.params) if args.params is not None else None)
    widths = {c: max(len(c), *(len(str(v)) for v in table[c])) for c in table.columns}
    for row in [dict(zip(table.columns, table.columns)), *table.to_dict("records")]:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in table.columns).rstrip())
    if city is not None:
        runnable = int((table["runs here"] == "yes").sum())
        print(f"\n{city.name} has {', '.join(city.meta.modalities) or 'no modalities'}: {runnable} of "
              f"{len(table)} methods can run there; `--methods all` runs those of the results table")
    return 0


def _readme(args: argparse.Namespace) -> int:
    from musecl.report import update_readme
    from musecl.runner import resolve_city

    run_dir = args.build / "work" / "results" / "all_methods"
    if not (run_dir / "results.csv").is_file():  # before the city: the toy city would be generated for nothing
        raise FileNotFoundError(f"{run_dir / 'results.csv'} is missing: build the book first (`make book`)")
    city = resolve_city(args.city or "toy", cities_dir=args.build / "cities")
    update_readme(args.readme, run_dir, city, args.figure)
    print(f"wrote the results at a glance into {args.readme} and {args.figure}")
    return 0


def _train_encoders(args: argparse.Namespace) -> int:
    from musecl.config import RunConfig
    from musecl.scaling.distributed import leave_process_group, train_encoders
    from musecl.training import processes

    config = RunConfig.from_yaml(args.params, device=args.device)
    try:
        stages = train_encoders(args.city, config, args.cache or args.out / "cache", kinds=args.kinds)
        if processes().is_main():
            for kind, folder in stages.items():
                print(f"{kind} encoder: {folder}")
    finally:
        leave_process_group()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musecl", description=(
        "MuseCL: multi-semantic contrastive region embeddings, their baselines and the book that "
        "compares them. Check a city folder (validate), train and evaluate methods on it (run), "
        "build the book (book); `musecl COMMAND --help` for each command's options."))
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of the one-line message")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a city folder; exit 1 with every problem listed")
    p.add_argument("city", type=Path)
    p.set_defaults(func=_validate)

    p = sub.add_parser("toy-city", help="generate the toy city (the book's default data)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--regions", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.set_defaults(func=_toy_city)

    p = sub.add_parser("fetch", help="find, download and verify (sha256) the raw files of a real data set")
    p.add_argument("name", choices=["beijing", "manhattan", "naip"])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data directory to look in first (default: $MUSECL_DATA_DIR or ../shared/data)")
    p.add_argument("--offline", action="store_true", help="never download; only check local copies")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("city", help="write a named data set as a city folder (toy, toy-small, beijing, manhattan)")
    p.add_argument("name", choices=["toy", "toy-small", "beijing", "manhattan"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None, help="where the raw files are (see musecl fetch)")
    p.set_defaults(func=_city)

    p = sub.add_parser("methods", help="list the methods and the inputs each needs; for a city, which can run")
    p.add_argument("city", nargs="?", default=None, help="a city folder or a named data set")
    p.add_argument("--params", type=Path, default=None,
                   help="YAML file of run settings: also say which methods these settings cannot run")
    p.set_defaults(func=_methods)

    p = sub.add_parser("run", help="sample, train, embed and evaluate a city; write results.csv",
                       epilog="Method names: `musecl methods [CITY]` lists them, with what each needs and, "
                              "for a city, which can run. `--methods all` runs every method of the results "
                              "table the city supports and records the skipped ones in run.json.")
    p.add_argument("city", help="a city folder or a named data set (toy, toy-small, beijing, manhattan)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--params", type=Path, default=None, help="YAML file of run settings (params/*.yaml)")
    p.add_argument("--methods", nargs="+", default=["MuseCL"],
                   help="method names (quote names with spaces) or `all`; default: MuseCL")
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: OUT/cache)")
    p.add_argument("--device", default=None, help="cpu or cuda (overrides the params file)")
    p.set_defaults(func=_run)

    p = sub.add_parser("train-encoders", help="train MuseCL's image encoders into the cache; under torchrun, "
                                              "in every process it starts (see train_processes)")
    p.add_argument("city", help="a city folder or a named data set")
    p.add_argument("--out", type=Path, required=True, help="the folder `musecl run --out` will use")
    p.add_argument("--params", type=Path, default=None)
    p.add_argument("--kinds", nargs="+", default=["satellite", "streetview"], choices=["satellite", "streetview"])
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: OUT/cache)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (overrides the params file)")
    p.set_defaults(func=_train_encoders)

    from musecl.scaling.bench_options import add_arguments as bench_arguments

    p = bench_arguments(sub.add_parser("bench", help="measure training, sampling, text, fusion and probe speed; "
                                                     "print a JSON summary"))
    p.set_defaults(func=_bench)

    p = sub.add_parser("readme", help="write the README's results at a glance (table and figure) from the "
                                      "book's build")
    p.add_argument("--build", type=Path, default=Path("build"), help="the folder `musecl book --out` wrote")
    p.add_argument("--city", default=None, help="the city the book was built on (default: the toy city)")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--figure", type=Path, default=Path("docs/at_a_glance.png"))
    p.set_defaults(func=_readme)

    p = sub.add_parser("book", help="execute every chapter with papermill, then render the book")
    p.add_argument("--city", default=None, help="city folder or named data set (default: the generated toy city)")
    p.add_argument("--params", type=Path, default=None,
                   help="YAML file of run settings that every chapter reads (params/*.yaml)")
    p.add_argument("--out", type=Path, default=Path("build"))
    p.add_argument("--only", nargs="*", default=None, help="chapter stems to execute")
    p.add_argument("--force", action="store_true", help="re-execute even unchanged chapters")
    p.add_argument("--at-once", type=int, default=2, metavar="N",
                   help="chapters executed side by side, each waiting for the ones it needs (default 2; 1: in turn)")
    p.set_defaults(func=_book)
    return parser


def _bench(args: argparse.Namespace) -> int:
    from musecl.scaling.bench import command

    return command(args)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input (a setting, file, city folder, chapter) or a busy output
    folder: the CLI prints their message. ConfigError, CityFormatError, ChecksumError and the like
    are ValueErrors, DataMissingError a FileNotFoundError. Any other exception is a bug and keeps
    its traceback."""
    from musecl.io import FolderBusyError
    from musecl.book import BookBuildError, ChapterExecutionError
    from musecl.runner import EveryMethodFailedError
    from musecl.training import DeviceUnavailableError

    return (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, FolderBusyError,
            ChapterExecutionError, BookBuildError, EveryMethodFailedError, DeviceUnavailableError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _known_errors() as err:
        print(f"error: {err}", file=sys.stderr)  # one line; CityFormatError: a line per problem
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
