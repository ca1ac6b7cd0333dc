"""The text of the sample rows (`chunkwise.inputs.sample`): one corpus per kind of row, built once per
process from a fixed seed, and the row's kind and body.

Kinds (`KINDS`): customer-service prose (a Zipf-weighted English vocabulary), code (Python, SQL, JSON
and shell lines from templates), records (CSV lines: date, invoice, customer, quantity, amount,
currency, status), Chinese customer-service sentences, and mixed rows (prose, then a snippet or a
table). A row is a slice of its kind's corpus starting at a line or word boundary.
"""

from __future__ import annotations

import random
from functools import lru_cache

#: The corpus depends on this constant only, never on the caller's seed.
CORPUS_SEED = 20_240_611
CORPUS_WORDS = 900_000

#: Rough English frequency order: earlier words are drawn more often.
VOCABULARY = """the of and to a in is that for it as with on be by this are from at or an
was can not has have will which their more all one about they we you if our its also
your when been into some than them what each other over such only most must need
data order customer account report review system service request support payment invoice
update delivery product quality issue problem message summary status team process policy
please check confirm reply details thanks question change return refund address contract
schedule meeting project budget release version server network storage security access
document section table record value number amount total price cost balance month year week
text line list item case task note plan rate time date code file form page part
today morning evening client partner vendor supplier manager engineer analyst operator
shipment warehouse inventory package tracking label carrier route region country city
because however therefore although whether several different important available required
described following previous current expected additional specific general recent similar
information management performance development environment configuration application
responsible understanding requirements documentation communication""".split()
#: (kind, weight): the share of rows of each kind among rows up to DENSE_MAX_CHARS.
KINDS = (("prose", 50), ("code", 15), ("records", 15), ("cjk", 10), ("mixed", 10))
#: Rows longer than this (characters) are prose.
DENSE_MAX_CHARS = 6000
#: Common words of Chinese customer-service text (order, refund, delivery, ...), drawn into sentences.
CJK_WORDS = """客户 订单 退款 发货 地址 包裹 物流 快递 付款 发票 账户 密码 登录 系统 问题 服务 产品 质量 价格 优惠
库存 仓库 配送 时间 今天 明天 已经 还没有 收到 需要 希望 尽快 处理 确认 联系 电话 邮件 信息 更新 取消
修改 申请 审核 通过 失败 成功 支付 金额 余额 会员 积分 活动 客服 回复 谢谢 您好 请问 可以 不能 因为
所以 但是 如果 我们 你们 他们 这个 那个 一个 没有 问题 非常 满意 不满意 损坏 退货 换货 保修 维修""".split()
#: Fullwidth comma (3 of 7), full stop, question and exclamation marks, enumeration comma.
CJK_PUNCT = ("\uff0c", "\uff0c", "\uff0c", "\u3002", "\uff1f", "\uff01", "\u3001")
CODE_TEMPLATES = (
    "def {f}({a}, {b}):\n    if {a} is None:\n        return {b}\n    return {a} + {b} * {n}\n",
    "for {a} in range({n}):\n    {b}[{a}] = {f}({a}) % {m}\n",
    "SELECT {a}, SUM({b}) FROM {f} WHERE {a} > {n} GROUP BY {a} ORDER BY 2 DESC LIMIT {m};\n",
    "{a} = {{\"{b}\": {n}, \"{f}\": [{m}, {n}]}}\n",
    "if ({a} != null && {a}.{b} >= {n}) {{ {f}({a}); }}\n",
    "    raise ValueError(f\"{f}: bad {a}={{{a}!r}}\")\n",
    "$ curl -s -X POST http://localhost:{m}/{f} -d '{{\"{a}\": {n}}}'\n",
)
CODE_NAMES = ("order", "items", "total", "refund", "parse_row", "customer_id", "invoices", "qty", "price", "status",
              "ship", "ledger", "rows", "tmp", "cfg", "retry_count", "load_batch", "tracking_no")


@lru_cache(maxsize=1)
def corpus() -> str:
    """About 7 MB of sentence-like English from `VOCABULARY`, the same on every call and machine."""
    rng = random.Random(CORPUS_SEED)
    weights = [1 / (rank + 10) ** 0.7 for rank in range(len(VOCABULARY))]  # roughly Zipf
    words = rng.choices(VOCABULARY, weights=weights, k=CORPUS_WORDS)
    sentences = []
    i = 0
    while i < len(words):  # per sentence, not per word: about 75,000 iterations
        n = rng.randint(6, 18)
        s = words[i : i + n]
        i += n
        if len(s) > 5 and rng.random() < 0.4:
            k = rng.randint(2, len(s) - 2)
            s[k] += ","
        s[0] = s[0].capitalize()
        sentences.append(" ".join(s) + ".")
    return " ".join(sentences)


@lru_cache(maxsize=1)
def code_corpus() -> str:
    """About 1 MB of code-like lines (Python, SQL, JSON, shell) from `CODE_TEMPLATES`."""
    rng = random.Random(CORPUS_SEED + 1)
    lines = []
    for _ in range(20_000):
        a, b, f = rng.sample(CODE_NAMES, 3)
        lines.append(rng.choice(CODE_TEMPLATES).format(a=a, b=b, f=f, n=rng.randint(0, 999), m=rng.randint(2, 9999)))
    return "".join(lines)


@lru_cache(maxsize=1)
def records_corpus() -> str:
    """About 1 MB of CSV records: date, invoice, customer, quantity, amount, currency, status."""
    rng = random.Random(CORPUS_SEED + 2)
    statuses = ("shipped", "pending", "refunded", "cancelled", "delivered")
    lines = []
    for _ in range(20_000):
        lines.append(f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},INV-{rng.randint(10000, 99999)},"
                     f"C{rng.randint(100000, 999999)},{rng.randint(1, 40)},{rng.randint(1, 99999) / 100:.2f},"
                     f"{rng.choice(('EUR', 'USD', 'GBP'))},{rng.choice(statuses)}\n")
    return "".join(lines)


@lru_cache(maxsize=1)
def cjk_corpus() -> str:
    """About 1 MB of Chinese customer-service sentences from `CJK_WORDS`."""
    rng = random.Random(CORPUS_SEED + 3)
    parts = []
    for _ in range(60_000):
        parts.append("".join(rng.choices(CJK_WORDS, k=rng.randint(3, 9))) + rng.choice(CJK_PUNCT))
    return "".join(parts)


def _slice(text: str, rng: random.Random, length: int, sep: str) -> str:
    """`length` characters of `text` from a random start just after a `sep` ("" for any character); the
    text repeats if needed."""
    start = rng.randrange(0, max(1, len(text) - length - 1))
    if sep:
        start = text.find(sep, start) + 1  # 0 when no separator follows: the text's start
    out = text[start : start + length]
    while len(out) < length:
        out += text[: length - len(out)]
    return out


def row_kind(rng: random.Random, length: int) -> str:
    """The kind of a row of `length` characters (long rows are prose)."""
    if length > DENSE_MAX_CHARS:
        return "prose"
    return rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]


def row_body(kind: str, rng: random.Random, length: int) -> str:
    """`length` characters of text of `kind`."""
    if kind == "prose":
        return _slice(corpus(), rng, length, " ")
    if kind == "code":
        return _slice(code_corpus(), rng, length, "\n")
    if kind == "records":
        return _slice(records_corpus(), rng, length, "\n")
    if kind == "cjk":
        return _slice(cjk_corpus(), rng, length, "")
    half = length // 2  # mixed: prose, then a snippet or a table
    block = _slice(rng.choice((code_corpus(), records_corpus())), rng, max(0, length - half - 2), "\n")
    return _slice(corpus(), rng, half, " ") + "\n\n" + block
