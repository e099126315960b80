//! The built-in task of the demo: arithmetic word problems (two- and three-digit addition and
//! subtraction) with a short column-by-column worked answer that ends in the result, generated
//! from a seed, with disjoint train and test questions and an answer checker.

pub mod tokenizer;

use std::collections::HashSet;

use crate::demo::config::Questions;
use crate::io::Rng;

/// `+` or `−`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
}

/// One problem: `a op b` told as a short story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub a: u32,
    pub b: u32,
    pub op: Op,
    /// The story asking for `a op b`.
    pub question: String,
}

const NAMES: [&str; 8] = ["Mia", "Leo", "Ana", "Sam", "Noor", "Kai", "Zoe", "Ravi"];
const THINGS: [&str; 8] = [
    "shells", "pens", "stamps", "cards", "beads", "coins", "apples", "books",
];
const ADD_STORIES: [&str; 4] = [
    "{n} has {a} {t}. {n} finds {b} more. How many {t} does {n} have now?",
    "A box holds {a} {t} and another box holds {b}. How many {t} are there in all?",
    "{n} read {a} pages on Monday and {b} pages on Tuesday. How many pages did {n} read?",
    "A club had {a} {t} and got {b} more. How many {t} does the club have?",
];
const SUB_STORIES: [&str; 4] = [
    "{n} had {a} {t} and gave away {b}. How many {t} are left?",
    "A shop had {a} {t} and sold {b}. How many {t} are left?",
    "A bus has {a} seats and {b} are taken. How many seats are free?",
    "{n} needs {a} {t} and has {b}. How many more {t} does {n} need?",
];

impl Problem {
    /// The exact result.
    pub fn result(&self) -> u32 {
        match self.op {
            Op::Add => self.a + self.b,
            Op::Sub => self.a - self.b,
        }
    }

    fn symbol(&self) -> &'static str {
        match self.op {
            Op::Add => "+",
            Op::Sub => "-",
        }
    }

    /// The reference answer: one step per column from the ones up (the shorter number padded with
    /// zeros), a final carry written out, then the result, e.g. for 47 + 385:
    /// `7 + 5 = 12, carry 1. 4 + 8 + 1 = 13, carry 1. 0 + 3 + 1 = 4. So 47 + 385 = 432. The answer
    /// is 432.`
    pub fn worked_answer(&self) -> String {
        let digits = |v: u32| -> Vec<u32> {
            v.to_string()
                .bytes()
                .rev()
                .map(|d| u32::from(d - b'0'))
                .collect()
        };
        let (da, db) = (digits(self.a), digits(self.b));
        let mut steps = Vec::new();
        let mut carry = 0;
        for i in 0..da.len().max(db.len()) {
            let (x, y) = (
                da.get(i).copied().unwrap_or(0),
                db.get(i).copied().unwrap_or(0),
            );
            let carry_in = if carry > 0 { " + 1" } else { "" };
            steps.push(match self.op {
                Op::Add => {
                    let sum = x + y + carry;
                    carry = sum / 10;
                    let note = if carry > 0 { ", carry 1" } else { "" };
                    format!("{x} + {y}{carry_in} = {sum}{note}.")
                }
                Op::Sub => {
                    let borrow_in = carry;
                    carry = u32::from(x < y + borrow_in);
                    let top = x + 10 * carry;
                    let minus_borrow = if borrow_in > 0 { " - 1" } else { "" };
                    let note = if carry > 0 { ", borrow 1" } else { "" };
                    format!("{top} - {y}{minus_borrow} = {}{note}.", top - y - borrow_in)
                }
            });
        }
        if carry > 0 && self.op == Op::Add {
            steps.push("Carry 1.".into());
        }
        let (a, b, s, r) = (self.a, self.b, self.symbol(), self.result());
        format!(
            "{} So {a} {s} {b} = {r}. The answer is {r}.",
            steps.join(" ")
        )
    }
}

/// The number after the last `The answer is` in `text`, if any.
pub fn parse_answer(text: &str) -> Option<u32> {
    let rest = &text[text.rfind("The answer is")? + "The answer is".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether `text` ends in the right result.
pub fn is_correct(problem: &Problem, text: &str) -> bool {
    parse_answer(text) == Some(problem.result())
}

/// A two- or three-digit number (each length equally likely).
fn operand(rng: &mut Rng) -> u32 {
    if rng.next_u64().is_multiple_of(2) {
        10 + (rng.next_u64() % 90) as u32
    } else {
        100 + (rng.next_u64() % 900) as u32
    }
}

fn pick<'a>(items: &[&'a str], rng: &mut Rng) -> &'a str {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

/// One random problem (subtractions never go below zero).
pub fn random_problem(rng: &mut Rng) -> Problem {
    let op = if rng.next_u64().is_multiple_of(2) {
        Op::Add
    } else {
        Op::Sub
    };
    let (mut a, mut b) = (operand(rng), operand(rng));
    if op == Op::Sub && a < b {
        std::mem::swap(&mut a, &mut b);
    }
    let story = pick(
        match op {
            Op::Add => &ADD_STORIES,
            Op::Sub => &SUB_STORIES,
        },
        rng,
    );
    let question = story
        .replace("{n}", pick(&NAMES, rng))
        .replace("{t}", pick(&THINGS, rng))
        .replace("{a}", &a.to_string())
        .replace("{b}", &b.to_string());
    Problem { a, b, op, question }
}

/// Distinct calculations there are (two- and three-digit operands, `a + b` = `b + a`, `a − b`
/// with `a ≥ b`): about 1.2 million; splits are kept well below, so drawing them stays fast.
pub const MAX_QUESTIONS: usize = 500_000;

/// The three splits of the questions.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Vec<Problem>,
    pub validation: Vec<Problem>,
    pub test: Vec<Problem>,
}

/// The calculation a problem asks for: `a + b` and `b + a` are the same one.
fn calculation(p: &Problem) -> (u32, Op, u32) {
    match p.op {
        Op::Add => (p.a.min(p.b), p.op, p.a.max(p.b)),
        Op::Sub => (p.a, p.op, p.b),
    }
}

/// Train, validation and test problems from `seed`, no calculation in two splits (nor twice in
/// one). The sizes must add up to at most [`MAX_QUESTIONS`].
pub fn split(seed: u64, sizes: Questions) -> Splits {
    let total = sizes.train + sizes.validation + sizes.test;
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut problems = Vec::with_capacity(total);
    while problems.len() < total {
        let p = random_problem(&mut rng);
        if seen.insert(calculation(&p)) {
            problems.push(p);
        }
    }
    let test = problems.split_off(sizes.train + sizes.validation);
    let validation = problems.split_off(sizes.train);
    Splits {
        train: problems,
        validation,
        test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(a: u32, op: Op, b: u32) -> Problem {
        Problem {
            a,
            b,
            op,
            question: String::new(),
        }
    }

    /// Each answer worked by hand; its problem is the one it names ("So A op B = C").
    #[test]
    fn worked_answers_by_hand() {
        let by_hand = [
            "7 + 5 = 12, carry 1. 4 + 8 + 1 = 13, carry 1. 0 + 3 + 1 = 4. So 47 + 385 = 432. The answer is 432.",
            "5 + 7 = 12, carry 1. 8 + 4 + 1 = 13, carry 1. Carry 1. So 85 + 47 = 132. The answer is 132.",
            "12 - 7 = 5, borrow 1. 13 - 8 - 1 = 4, borrow 1. 5 - 0 - 1 = 4. So 532 - 87 = 445. The answer is 445.",
            "5 - 2 = 3. 10 - 1 = 9, borrow 1. 3 - 0 - 1 = 2. So 305 - 12 = 293. The answer is 293.",
            "4 + 1 = 5. 2 + 3 = 5. So 24 + 31 = 55. The answer is 55.",
        ];
        for expected in by_hand {
            let named: Vec<&str> = expected.split("So ").nth(1).unwrap().split(' ').collect();
            let op = if named[1] == "+" { Op::Add } else { Op::Sub };
            let (a, b) = (named[0].parse().unwrap(), named[2].parse().unwrap());
            assert_eq!(problem(a, op, b).worked_answer(), expected);
        }
    }

    #[test]
    fn the_checker_reads_the_final_number() {
        let p = problem(47, Op::Add, 385);
        assert!(is_correct(&p, &p.worked_answer()));
        assert!(!is_correct(&p, "So 47 + 385 = 422. The answer is 422."));
        assert!(!is_correct(&p, "So 47 + 385 = 432."));
        assert_eq!(
            parse_answer("The answer is 12. The answer is 4320."),
            Some(4320)
        );
        assert_eq!(parse_answer("The answer is ."), None);
    }

    #[test]
    fn splits_are_seeded_disjoint_and_valid() {
        let sizes = Questions {
            train: 500,
            validation: 100,
            test: 200,
        };
        let s = split(3, sizes);
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (500, 100, 200)
        );
        assert_eq!(split(3, sizes), s);
        assert_ne!(split(4, sizes).train, s.train);
        // a larger test split leaves train and validation as they were
        let more = split(3, Questions { test: 300, ..sizes });
        assert_eq!((&more.train, &more.validation), (&s.train, &s.validation));
        let all: Vec<&Problem> = s.train.iter().chain(&s.validation).chain(&s.test).collect();
        let calculations: HashSet<_> = all.iter().map(|p| calculation(p)).collect();
        assert_eq!(
            calculations.len(),
            all.len(),
            "no calculation in two splits"
        );
        // 12 + 34 and 34 + 12 count as one
        assert_eq!(
            calculation(&problem(12, Op::Add, 34)),
            calculation(&problem(34, Op::Add, 12))
        );
        for p in &all {
            assert!((10..1000).contains(&p.a) && (10..1000).contains(&p.b));
            assert!(p.question.contains(&p.a.to_string()) && !p.question.contains('{'));
            assert!(is_correct(p, &p.worked_answer()));
            if p.op == Op::Sub {
                assert!(p.a >= p.b);
            }
        }
        let adds = s.train.iter().filter(|p| p.op == Op::Add).count();
        assert!((200..300).contains(&adds), "{adds} additions");
    }
}
