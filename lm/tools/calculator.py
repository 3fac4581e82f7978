"""Exact arithmetic: a recursive-descent parser over ``fractions.Fraction`` (no ``eval``).

Grammar (``**`` binds tighter than unary minus and is right-associative, as in Python)::

  expr    := term (('+' | '-') term)*
  term    := unary (('*' | '/') unary)*
  unary   := ('-' | '+') unary | power
  power   := atom ('**' unary)?
  atom    := number | '(' expr ')'
  number  := digits ('.' digits?)? | '.' digits          (decimals are exact: 0.1 == 1/10)

``^`` is accepted as ``**``. Results print as an integer when whole, else as the reduced fraction
``p/q`` followed by a decimal approximation: ``1/3 (~0.3333333333)``. Errors (``CalcError``) name the
problem and the character position: division by zero, unbalanced parentheses, unknown characters,
exponents that are not integers or larger than ``max_exponent`` in size, numbers and results longer
than ``max_digits`` digits, nesting deeper than ``MAX_DEPTH``.
"""

from fractions import Fraction

from lm.tools.base import Tool, ToolResult, error

MAX_DEPTH = 100


class CalcError(ValueError):
  pass


def _tokens(text: str) -> list[tuple[str, str, int]]:
  """(kind, text, position) with kind in num, op, (, ), end."""
  out, i = [], 0
  while i < len(text):
    c = text[i]
    if c.isspace():
      i += 1
    elif c.isdigit() or c == '.':
      j = i
      while j < len(text) and (text[j].isdigit() or text[j] == '.'):
        j += 1
      number = text[i:j]
      if number.count('.') > 1 or number == '.':
        raise CalcError(f'malformed number {number!r} at position {i}')
      out.append(('num', number, i))
      i = j
    elif text.startswith('**', i):
      out.append(('op', '**', i))
      i += 2
    elif c in '+-*/^()':
      out.append((c if c in '()' else 'op', '**' if c == '^' else c, i))
      i += 1
    else:
      raise CalcError(f'unknown character {c!r} at position {i}')
  out.append(('end', '', len(text)))
  return out


class _Parser:

  def __init__(self, text: str, max_digits: int, max_exponent: int):
    self.tokens, self.i, self.depth = _tokens(text), 0, 0
    self.max_digits, self.max_exponent = max_digits, max_exponent

  def peek(self):
    return self.tokens[self.i]

  def take(self):
    tok = self.tokens[self.i]
    self.i += 1
    return tok

  def parse(self) -> Fraction:
    if self.peek()[0] == 'end':
      raise CalcError('empty expression')
    value = self.expr()
    kind, text, pos = self.peek()
    if kind == ')':
      raise CalcError(f'unbalanced parentheses: unexpected ")" at position {pos}')
    if kind != 'end':
      raise CalcError(f'unexpected {text!r} at position {pos}')
    return value

  def expr(self) -> Fraction:
    value = self.term()
    while self.peek()[1] in ('+', '-') and self.peek()[0] == 'op':
      op = self.take()[1]
      value = value + self.term() if op == '+' else value - self.term()
      self.check_size(value)
    return value

  def term(self) -> Fraction:
    value = self.unary()
    while self.peek()[0] == 'op' and self.peek()[1] in ('*', '/'):
      _, op, pos = self.take()
      rhs = self.unary()
      if op == '/' and rhs == 0:
        raise CalcError(f'division by zero at position {pos}')
      value = value * rhs if op == '*' else value / rhs
      self.check_size(value)
    return value

  def unary(self) -> Fraction:
    self.depth += 1  # every nested parenthesis or sign passes here
    if self.depth > MAX_DEPTH:
      raise CalcError(f'expression is nested too deeply (over {MAX_DEPTH} levels) at position {self.peek()[2]}')
    if self.peek()[0] == 'op' and self.peek()[1] in ('+', '-'):
      op = self.take()[1]
      value = self.unary()
      value = -value if op == '-' else value
    else:
      value = self.power()
    self.depth -= 1
    return value

  def power(self) -> Fraction:
    base = self.atom()
    if self.peek()[0] == 'op' and self.peek()[1] == '**':
      pos = self.take()[2]
      exponent = self.unary()
      if exponent.denominator != 1:
        raise CalcError(f'exponent {exponent} at position {pos} is not an integer')
      if abs(exponent) > self.max_exponent:
        raise CalcError(f'exponent {exponent} at position {pos} is too large (limit {self.max_exponent})')
      if base == 0 and exponent < 0:
        raise CalcError(f'division by zero: 0 to a negative power at position {pos}')
      bits = max(abs(base.numerator).bit_length(), base.denominator.bit_length()) - 1  # ~log2 of the size
      if bits * abs(exponent) > self.max_digits * 3.33:
        raise CalcError(f'result of the power at position {pos} is too large (over {self.max_digits} digits)')
      base = base ** int(exponent)
    return base

  def atom(self) -> Fraction:
    kind, text, pos = self.take()
    if kind == 'num':
      if len(text.replace('.', '')) > self.max_digits:
        raise CalcError(f'number at position {pos} is too large (over {self.max_digits} digits)')
      return Fraction(text)
    if kind == '(':
      value = self.expr()
      if self.peek()[0] != ')':
        raise CalcError(f'unbalanced parentheses: "(" at position {pos} is never closed')
      self.take()
      return value
    if kind == 'end':
      raise CalcError(f'expression ends early at position {pos}: a number or "(" is missing')
    raise CalcError(f'unexpected {text!r} at position {pos}: a number or "(" is expected')

  def check_size(self, value: Fraction):
    limit = self.max_digits * 3.33  # bits
    if max(abs(value.numerator).bit_length(), value.denominator.bit_length()) > limit:
      raise CalcError(f'intermediate result is too large (over {self.max_digits} digits)')


def evaluate(expression: str, max_digits: int = 1000, max_exponent: int = 10000) -> Fraction:
  """The exact value of ``expression``; raises ``CalcError`` saying what is wrong."""
  return _Parser(expression, max_digits, max_exponent).parse()


def format_value(value: Fraction, digits: int = 10) -> str:
  """``42``, or ``p/q (~d)`` with ``d`` to ``digits`` significant digits (left out when no float holds it)."""
  if value.denominator == 1:
    return str(value.numerator)
  text = f'{value.numerator}/{value.denominator}'
  try:
    approx = float(value)
  except OverflowError:
    return text
  return f'{text} (~{approx:.{digits}g})' if approx != 0 else text


class Calculator(Tool):
  name = 'calculator'
  description = 'Exact arithmetic: + - * / ** and parentheses on integers and decimals, e.g. "(12.5 + 3) * 4".'
  parameters = {'expression': (str, True)}

  def __init__(self, max_digits: int = 1000, max_exponent: int = 10000, **kwargs):
    super().__init__(**kwargs)
    self.max_digits, self.max_exponent = max_digits, max_exponent

  def run(self, arguments: dict) -> ToolResult:
    try:
      value = evaluate(arguments['expression'], self.max_digits, self.max_exponent)
    except CalcError as e:
      return error(f'calculator: {e}')
    return ToolResult(format_value(value), True)
