"""Read VNN-LIB robustness properties (the MNIST style of VNN-COMP) into a box and an unsafe output set.

A property says: no input ``x`` with ``lo <= x <= hi`` may give logits ``y`` in
the unsafe set, a union of polyhedra ``{y : A y <= b}`` (one per disjunct).

The file is tokenised (``;`` starts a comment to the end of the line) and parsed
as s-expressions; this subset of VNN-LIB is understood::

    file     := command*
    command  := (declare-const NAME Real)          NAME is X_i (input i) or Y_j (output j)
              | (assert formula)
    formula  := atom | (and formula*) | (or formula*)
    atom     := (<= term term) | (>= term term)
    term     := X_i | Y_j | number | (- number)

with these restrictions:

- an atom compares one variable with a number, or two outputs (``Y_j`` with ``Y_k``);
- an assert is either about inputs only or about outputs only;
- input asserts are conjunctions of bounds ``X_i <= v`` / ``X_i >= v`` (either
  operand order), every input has a lower and an upper bound (the tightest wins)
  and together they form the box ``[lo, hi]``;
- output asserts may nest ``and`` / ``or`` freely; their conjunction is brought
  into disjunctive normal form, each disjunct a list of rows ``a . y <= b``.

The input variables must be X_0 .. X_{n-1} and the outputs Y_0 .. Y_{m-1}.
A property whose disjuncts are each a single ``Y_j >= Y_c`` with one common ``c``
(the form of the mnistfc benchmark: "some other class scores at least as high as
class c") protects class ``c``: that is its ``label``. Its rows are then exactly
the rows of `Network.spec_matrix(c)` with ``b = 0``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explain_mnist.errors import UserError

VARIABLE = re.compile(r"([XY])_(\d+)")
COMPARISONS = ("<=", ">=")


@dataclass
class VnnlibProperty:
    """An input box and the unsafe output set of a VNN-LIB property (see the module docstring).

    ``disjuncts`` is a list of ``(A, b)`` pairs, ``A`` of shape ``(k, n_outputs)``:
    the logits ``y`` are unsafe iff ``A @ y <= b`` holds row-wise for some pair.
    ``label`` is the protected class, or None when the property is not of the
    "class c stays on top" form.
    """

    lo: np.ndarray
    hi: np.ndarray
    disjuncts: list
    label: int | None
    n_outputs: int
    path: str = ""

    @property
    def n_inputs(self) -> int:
        return self.lo.shape[0]

    def unsafe(self, Y: np.ndarray) -> np.ndarray:
        """Return, for each row of logits ``Y`` (B, n_outputs), whether it lies in the unsafe set."""
        Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
        hit = np.zeros(Y.shape[0], dtype=bool)
        for A, b in self.disjuncts:
            hit |= np.all(Y @ A.T <= b, axis=1)
        return hit


class _List(list):
    """A parenthesised s-expression, remembering the line of its opening parenthesis."""

    def __init__(self, line: int):
        super().__init__()
        self.line = line


@dataclass(frozen=True)
class _Token:
    text: str
    line: int


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split(";", 1)[0]
        for piece in code.replace("(", " ( ").replace(")", " ) ").split():
            tokens.append(_Token(piece, number))
    return tokens


def parse_sexpressions(text: str, source: str = "<text>") -> list:
    """Return the top-level s-expressions of ``text``: nested lists of tokens (with line numbers)."""
    stack: list[_List] = [_List(0)]
    for token in _tokens(text):
        if token.text == "(":
            stack.append(_List(token.line))
        elif token.text == ")":
            if len(stack) == 1:
                raise UserError(f"{source}, line {token.line}: unexpected ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(token)
    if len(stack) > 1:
        raise UserError(f"{source}: the '(' on line {stack[-1].line} is never closed")
    return list(stack[0])


class _Reader:
    """Turns parsed commands into bounds and output rows, failing with the file and line."""

    def __init__(self, source: str):
        self.source = source
        self.declared: dict[str, set] = {"X": set(), "Y": set()}

    def fail(self, where, expected: str) -> UserError:
        line = where.line if isinstance(where, (_List, _Token)) else 0
        return UserError(f"{self.source}, line {line}: expected {expected}")

    def head(self, expr) -> str | None:
        if isinstance(expr, _List) and expr and isinstance(expr[0], _Token):
            return expr[0].text
        return None

    def declare(self, expr) -> None:
        if len(expr) != 3 or not all(isinstance(e, _Token) for e in expr[1:]) or expr[2].text != "Real":
            raise self.fail(expr, "(declare-const X_i Real) or (declare-const Y_j Real)")
        match = VARIABLE.fullmatch(expr[1].text)
        if match is None:
            raise self.fail(expr, f"a variable named X_i or Y_j, got {expr[1].text!r}")
        self.declared[match[1]].add(int(match[2]))

    def term(self, expr) -> tuple[dict, float]:
        """Return a term as ``(coefficients {(kind, index): c}, constant)``."""
        if isinstance(expr, _Token):
            match = VARIABLE.fullmatch(expr.text)
            if match:
                return {(match[1], int(match[2])): 1.0}, 0.0
            return {}, self.number(expr)
        if self.head(expr) == "-" and len(expr) == 2 and isinstance(expr[1], _Token):
            return {}, -self.number(expr[1])
        raise self.fail(expr, "a term: X_i, Y_j, a number or (- number)")

    def number(self, token: _Token) -> float:
        try:
            value = float(token.text)
        except ValueError:
            raise self.fail(token, f"a number or a variable X_i / Y_j, got {token.text!r}") from None
        if not np.isfinite(value):
            raise self.fail(token, f"a finite number, got {token.text!r}")
        return value

    def atom(self, expr) -> tuple[dict, float]:
        """Return an atom as ``(coefficients, bound)`` meaning ``sum coefficients * variables <= bound``."""
        op = self.head(expr)
        if op not in COMPARISONS or len(expr) != 3:
            raise self.fail(expr, "(<= term term) or (>= term term)")
        (lhs, lc), (rhs, rc) = self.term(expr[1]), self.term(expr[2])
        if op == ">=":
            (lhs, lc), (rhs, rc) = (rhs, rc), (lhs, lc)
        coefficients = dict(lhs)
        for var, c in rhs.items():
            coefficients[var] = coefficients.get(var, 0.0) - c
        coefficients = {var: c for var, c in coefficients.items() if c != 0.0}
        for kind, index in coefficients:
            if index not in self.declared[kind]:
                raise self.fail(expr, f"declared variables; {kind}_{index} is not declared")
        kinds = {kind for kind, _ in coefficients}
        if not coefficients or kinds == {"X", "Y"} or ("X" in kinds and len(coefficients) != 1):
            raise self.fail(expr, "a bound on one input (X_i <= v or X_i >= v) or a comparison of outputs "
                                  "Y_j with each other or with numbers")
        return coefficients, rc - lc

    def kinds(self, expr) -> set:
        """Return the variable kinds ("X", "Y") a formula mentions."""
        if isinstance(expr, _Token):
            match = VARIABLE.fullmatch(expr.text)
            return {match[1]} if match else set()
        return set().union(*(self.kinds(e) for e in expr)) if expr else set()

    def input_bounds(self, expr, bounds: list) -> None:
        """Append ``(index, coefficient, bound)`` of each bound in a conjunction of input bounds."""
        if self.head(expr) == "and":
            for part in expr[1:]:
                self.input_bounds(part, bounds)
            return
        if self.head(expr) == "or":
            raise self.fail(expr, "a conjunction of input bounds (a box); disjunctions over inputs are not supported")
        coefficients, bound = self.atom(expr)
        ((_, index), c), = coefficients.items()
        bounds.append((index, c, bound))

    def output_dnf(self, expr) -> list[list]:
        """Return a formula over outputs in disjunctive normal form: a list of lists of atoms."""
        op = self.head(expr)
        if op == "and":
            dnf = [[]]
            for part in expr[1:]:
                dnf = [left + right for left in dnf for right in self.output_dnf(part)]
            return dnf
        if op == "or":
            return [conj for part in expr[1:] for conj in self.output_dnf(part)]
        return [[self.atom(expr)]]


def read_vnnlib(path: str | Path) -> VnnlibProperty:
    """Return the `VnnlibProperty` of the VNN-LIB file at ``path`` (grammar in the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"VNN-LIB file {path} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"VNN-LIB file {path} cannot be read as text ({exc})") from None
    return parse_vnnlib(text, source=str(path))


def parse_vnnlib(text: str, source: str = "<text>") -> VnnlibProperty:
    """Return the `VnnlibProperty` of VNN-LIB text; ``source`` names it in error messages."""
    reader = _Reader(source)
    commands = parse_sexpressions(text, source)
    for expr in commands:
        if not isinstance(expr, _List) or reader.head(expr) not in ("declare-const", "assert"):
            raise reader.fail(expr, "(declare-const ...) or (assert ...) at the top level")
        if reader.head(expr) == "declare-const":
            reader.declare(expr)
    n_in, n_out = _variable_count(reader, "X"), _variable_count(reader, "Y")
    bounds: list = []
    output_dnf: list = [[]]
    for expr in commands:
        if reader.head(expr) != "assert":
            continue
        if len(expr) != 2:
            raise reader.fail(expr, "(assert formula) with one formula")
        kinds = reader.kinds(expr[1])
        if kinds == {"X"}:
            reader.input_bounds(expr[1], bounds)
        elif kinds == {"Y"}:
            output_dnf = [left + right for left in output_dnf for right in reader.output_dnf(expr[1])]
        else:
            raise reader.fail(expr, "an assert about inputs X_i only or about outputs Y_j only")
    lo, hi = _box(bounds, n_in, source)
    if output_dnf == [[]]:
        raise UserError(f"{source}: no output constraint (assert over Y_j) found; the unsafe set is missing")
    disjuncts = [_rows(conj, n_out) for conj in output_dnf]
    return VnnlibProperty(lo=lo, hi=hi, disjuncts=disjuncts, label=_protected_class(disjuncts),
                          n_outputs=n_out, path=source)


def _variable_count(reader: _Reader, kind: str) -> int:
    indices = reader.declared[kind]
    if not indices or indices != set(range(len(indices))):
        raise UserError(f"{reader.source}: expected declarations of {kind}_0 .. {kind}_n without gaps, "
                        f"got {len(indices)} {kind} variables")
    return len(indices)


def _box(bounds: list, n: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    if bounds:
        index, coefficient, bound = (np.array(column) for column in zip(*bounds))
        value = bound / coefficient + 0.0  # no -0.0
        upper = coefficient > 0
        np.minimum.at(hi, index[upper], value[upper])
        np.maximum.at(lo, index[~upper], value[~upper])
    for name, side in (("lower", lo), ("upper", hi)):
        missing = np.flatnonzero(~np.isfinite(side))
        if missing.size:
            raise UserError(f"{source}: expected a {name} bound on every input; X_{missing[0]} has none "
                            f"({missing.size} inputs lack one)")
    empty = np.flatnonzero(lo > hi)
    if empty.size:
        raise UserError(f"{source}: the input box is empty: X_{empty[0]} has lower bound {lo[empty[0]]} "
                        f"> upper bound {hi[empty[0]]}")
    return lo, hi


def _rows(conjunction: list, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    A = np.zeros((len(conjunction), n_out))
    b = np.zeros(len(conjunction))
    for k, (coefficients, bound) in enumerate(conjunction):
        for (_, index), c in coefficients.items():
            A[k, index] += c
        b[k] = bound
    return A, b


def _protected_class(disjuncts: list) -> int | None:
    """Return c if every disjunct is the single row ``y_c - y_j <= 0`` for distinct j != c, else None."""
    classes = set()
    competitors = []
    for A, b in disjuncts:
        if A.shape[0] != 1 or b[0] != 0 or np.count_nonzero(A[0]) != 2 or sorted(A[0][A[0] != 0]) != [-1.0, 1.0]:
            return None
        classes.add(int(np.flatnonzero(A[0] == 1.0)[0]))
        competitors.append(int(np.flatnonzero(A[0] == -1.0)[0]))
    if len(classes) != 1 or len(set(competitors)) != len(competitors):
        return None
    return classes.pop()
