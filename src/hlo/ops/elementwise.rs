//! Elementwise ops: unary math, binary arithmetic, comparison, select and conversions.
//!
//! Broadcasting rule: both operands of a binary op have the same dimensions, except that a
//! rank-0 operand is broadcast to the other's dimensions. Anything else needs an explicit
//! `broadcast_in_dim`/`broadcast_to`. Operands have the same dtype (no promotion); Rust
//! numbers in operator expressions (`x * 2.0`) take the value's dtype.

use std::f64::consts::PI;
use std::ops;
use std::panic::Location;

use crate::dtype::DType;
use crate::hlo::emit::Emitter;
use crate::hlo::graph::Value;
use crate::hlo::op::{check, single_result, EmitNode, Operation, VjpNode};
use crate::hlo::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum UnaryKind {
    Neg,
    Abs,
    Sign,
    Exp,
    Log,
    Log1p,
    Expm1,
    Sqrt,
    Rsqrt,
    Tanh,
    Logistic,
    Sin,
    Cos,
    Erf,
    Floor,
    Ceil,
    Round,
    IsFinite,
    Not,
}

impl UnaryKind {
    fn mnemonic(self) -> &'static str {
        match self {
            UnaryKind::Neg => "stablehlo.negate",
            UnaryKind::Abs => "stablehlo.abs",
            UnaryKind::Sign => "stablehlo.sign",
            UnaryKind::Exp => "stablehlo.exponential",
            UnaryKind::Log => "stablehlo.log",
            UnaryKind::Log1p => "stablehlo.log_plus_one",
            UnaryKind::Expm1 => "stablehlo.exponential_minus_one",
            UnaryKind::Sqrt => "stablehlo.sqrt",
            UnaryKind::Rsqrt => "stablehlo.rsqrt",
            UnaryKind::Tanh => "stablehlo.tanh",
            UnaryKind::Logistic => "stablehlo.logistic",
            UnaryKind::Sin => "stablehlo.sine",
            UnaryKind::Cos => "stablehlo.cosine",
            UnaryKind::Erf => "chlo.erf",
            UnaryKind::Floor => "stablehlo.floor",
            UnaryKind::Ceil => "stablehlo.ceil",
            UnaryKind::Round => "stablehlo.round_nearest_even",
            UnaryKind::IsFinite => "stablehlo.is_finite",
            UnaryKind::Not => "stablehlo.not",
        }
    }

    fn name(self) -> &'static str {
        match self {
            UnaryKind::Neg => "neg",
            UnaryKind::Abs => "abs",
            UnaryKind::Sign => "sign",
            UnaryKind::Exp => "exp",
            UnaryKind::Log => "log",
            UnaryKind::Log1p => "log1p",
            UnaryKind::Expm1 => "expm1",
            UnaryKind::Sqrt => "sqrt",
            UnaryKind::Rsqrt => "rsqrt",
            UnaryKind::Tanh => "tanh",
            UnaryKind::Logistic => "logistic",
            UnaryKind::Sin => "sin",
            UnaryKind::Cos => "cos",
            UnaryKind::Erf => "erf",
            UnaryKind::Floor => "floor",
            UnaryKind::Ceil => "ceil",
            UnaryKind::Round => "round",
            UnaryKind::IsFinite => "is_finite",
            UnaryKind::Not => "not",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Unary(UnaryKind);

impl Operation for Unary {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"{}\"({}) : {}",
            node.result,
            self.0.mnemonic(),
            node.inputs[0],
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None]) };
        let x = &node.inputs[0];
        let y = &node.outputs[0];
        let gradient = match self.0 {
            UnaryKind::Neg => -ct,
            UnaryKind::Abs => ct * &x.sign(),
            UnaryKind::Exp => ct * y,
            UnaryKind::Log => ct / x,
            UnaryKind::Log1p => ct / &(x + 1.0),
            UnaryKind::Expm1 => ct * &(y + 1.0),
            UnaryKind::Sqrt => ct * &(y * 2.0).reciprocal(),
            UnaryKind::Rsqrt => ct * &(&(y * y) * y) * -0.5,
            UnaryKind::Tanh => ct * &(1.0 - &(y * y)),
            UnaryKind::Logistic => ct * &(y * &(1.0 - y)),
            UnaryKind::Sin => ct * &x.cos(),
            UnaryKind::Cos => -&(ct * &x.sin()),
            UnaryKind::Erf => ct * &(-&(x * x)).exp() * (2.0 / PI.sqrt()),
            UnaryKind::Sign | UnaryKind::Floor | UnaryKind::Ceil | UnaryKind::Round => return Ok(vec![None]),
            UnaryKind::IsFinite | UnaryKind::Not => return Ok(vec![None]),
        };
        Ok(vec![Some(gradient)])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Rem,
    Atan2,
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
}

impl BinaryKind {
    fn mnemonic(self) -> &'static str {
        match self {
            BinaryKind::Add => "stablehlo.add",
            BinaryKind::Sub => "stablehlo.subtract",
            BinaryKind::Mul => "stablehlo.multiply",
            BinaryKind::Div => "stablehlo.divide",
            BinaryKind::Pow => "stablehlo.power",
            BinaryKind::Max => "stablehlo.maximum",
            BinaryKind::Min => "stablehlo.minimum",
            BinaryKind::Rem => "stablehlo.remainder",
            BinaryKind::Atan2 => "stablehlo.atan2",
            BinaryKind::And => "stablehlo.and",
            BinaryKind::Or => "stablehlo.or",
            BinaryKind::Xor => "stablehlo.xor",
            BinaryKind::ShiftLeft => "stablehlo.shift_left",
            BinaryKind::ShiftRightLogical => "stablehlo.shift_right_logical",
        }
    }

    fn name(self) -> &'static str {
        match self {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
            BinaryKind::Div => "div",
            BinaryKind::Pow => "pow",
            BinaryKind::Max => "max",
            BinaryKind::Min => "min",
            BinaryKind::Rem => "rem",
            BinaryKind::Atan2 => "atan2",
            BinaryKind::And => "and",
            BinaryKind::Or => "or",
            BinaryKind::Xor => "xor",
            BinaryKind::ShiftLeft => "shift_left",
            BinaryKind::ShiftRightLogical => "shift_right_logical",
        }
    }

    /// Whether the op is defined for this dtype.
    fn accepts(self, dtype: DType) -> bool {
        match self {
            BinaryKind::Add
            | BinaryKind::Sub
            | BinaryKind::Mul
            | BinaryKind::Div
            | BinaryKind::Max
            | BinaryKind::Min => dtype != DType::Pred || matches!(self, BinaryKind::Max | BinaryKind::Min),
            BinaryKind::Rem => dtype != DType::Pred,
            BinaryKind::Pow | BinaryKind::Atan2 => dtype.is_float(),
            BinaryKind::And | BinaryKind::Or | BinaryKind::Xor => dtype == DType::Pred || dtype.is_integer(),
            BinaryKind::ShiftLeft | BinaryKind::ShiftRightLogical => dtype.is_integer(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Binary(BinaryKind);

impl Operation for Binary {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"{}\"({}) : {}",
            node.result,
            self.0.mnemonic(),
            node.operands(),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None]) };
        let (a, b) = (&node.inputs[0], &node.inputs[1]);
        let y = &node.outputs[0];
        let (da, db) = match self.0 {
            BinaryKind::Add => (ct.clone(), ct.clone()),
            BinaryKind::Sub => (ct.clone(), -ct),
            BinaryKind::Mul => (ct * b, ct * a),
            BinaryKind::Div => (ct / b, -&(ct * &(y / b))),
            BinaryKind::Pow => {
                // d/da a^b = b a^(b-1); d/db a^b = a^b log(a), with log(0) read as 0 (as JAX).
                let da = ct * &(b * &a.pow(&(b - 1.0)));
                let safe_a = a.eq(&a.zeros_like()).select(&a.ones_like(), a);
                (da, ct * &(y * &safe_a.log()))
            }
            BinaryKind::Max | BinaryKind::Min => {
                // Ties split the gradient evenly, as JAX does.
                let chosen = if self.0 == BinaryKind::Max { a.gt(b) } else { a.lt(b) };
                let half = a.full_like(0.5);
                let share_a = chosen.select(&a.ones_like(), &a.eq(b).select(&half, &a.zeros_like()));
                (ct * &share_a, ct * &(1.0 - &share_a))
            }
            BinaryKind::Rem => {
                let quotient = a / b;
                (ct.clone(), -&(ct * &(&quotient.sign() * &quotient.abs().floor())))
            }
            BinaryKind::Atan2 => {
                let denominator = &(a * a) + &(b * b);
                (ct * &(b / &denominator), -&(ct * &(a / &denominator)))
            }
            BinaryKind::And
            | BinaryKind::Or
            | BinaryKind::Xor
            | BinaryKind::ShiftLeft
            | BinaryKind::ShiftRightLogical => return Ok(vec![None, None]),
        };
        Ok(vec![Some(da), Some(db)])
    }
}

/// Comparison directions of [`Value::compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
pub(crate) struct Compare(Comparison);

impl Operation for Compare {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "compare"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        let direction = match self.0 {
            Comparison::Eq => "EQ",
            Comparison::Ne => "NE",
            Comparison::Lt => "LT",
            Comparison::Le => "LE",
            Comparison::Gt => "GT",
            Comparison::Ge => "GE",
        };
        let dtype = node.input_types[0].dtype;
        let compare_type = if dtype.is_float() {
            "FLOAT"
        } else if dtype.is_signed_integer() {
            "SIGNED"
        } else {
            "UNSIGNED"
        };
        emitter.line(&format!(
            "{} = \"stablehlo.compare\"({}) {{comparison_direction = #stablehlo<comparison_direction {direction}>, compare_type = #stablehlo<comparison_type {compare_type}>}} : {}",
            node.result,
            node.operands(),
            node.signature()
        ));
    }

    fn vjp(&self, _: &VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![None, None])
    }
}

#[derive(Debug)]
pub(crate) struct Select;

impl Operation for Select {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "select"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.select\"({}) : {}",
            node.result,
            node.operands(),
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let Some(ct) = &cotangents[0] else { return Ok(vec![None, None, None]) };
        let predicate = &node.inputs[0];
        let zeros = ct.zeros_like();
        Ok(vec![None, Some(predicate.select(ct, &zeros)), Some(predicate.select(&zeros, ct))])
    }
}

#[derive(Debug)]
pub(crate) struct Convert;

impl Operation for Convert {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "convert"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.convert\"({}) : {}",
            node.result,
            node.inputs[0],
            node.signature()
        ));
    }

    fn vjp(&self, node: &VjpNode, cotangents: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        let input = &node.inputs[0];
        match &cotangents[0] {
            Some(ct) if input.dtype().is_float() && ct.dtype().is_float() => {
                Ok(vec![Some(ct.convert(input.dtype()))])
            }
            _ => Ok(vec![None]),
        }
    }
}

#[derive(Debug)]
pub(crate) struct BitcastConvert;

impl Operation for BitcastConvert {
    fn name(&self) -> &'static str {
        "bitcast_convert"
    }

    fn emit(&self, emitter: &mut Emitter, node: &EmitNode) {
        emitter.line(&format!(
            "{} = \"stablehlo.bitcast_convert\"({}) : {}",
            node.result,
            node.inputs[0],
            node.signature()
        ));
    }

    fn vjp(&self, _: &VjpNode, _: &[Option<Value>]) -> Result<Vec<Option<Value>>> {
        Ok(vec![None])
    }
}

fn unary(kind: UnaryKind, x: &Value, location: &'static Location<'static>) -> Value {
    let dtype = x.dtype();
    let accepted = match kind {
        UnaryKind::Not => dtype == DType::Pred || dtype.is_integer(),
        UnaryKind::Neg | UnaryKind::Abs | UnaryKind::Sign => {
            dtype != DType::Pred && !dtype.is_unsigned_integer()
        }
        _ => dtype.is_float(),
    };
    check(x, accepted, kind.name(), location, || format!("not defined for {:?}", x.ty()));
    let output = if kind == UnaryKind::IsFinite { x.ty().with_dtype(DType::Pred) } else { x.ty().clone() };
    single_result(Unary(kind), &[x], output, location)
}

/// Broadcasts a rank-0 operand to the other operand's dimensions; checks dtypes and dims.
fn align(op: &'static str, a: &Value, b: &Value, location: &'static Location<'static>) -> (Value, Value) {
    let dtypes_match = check(a, a.dtype() == b.dtype(), op, location, || {
        format!("operand dtypes differ: {:?} and {:?}", a.ty(), b.ty())
    });
    if !dtypes_match || a.dims() == b.dims() {
        return (a.clone(), b.clone());
    }
    if b.rank() == 0 {
        return (a.clone(), b.broadcast_in_dim_at(a.dims(), &[], location));
    }
    if a.rank() == 0 {
        return (a.broadcast_in_dim_at(b.dims(), &[], location), b.clone());
    }
    check(a, false, op, location, || {
        format!("operand shapes differ: {:?} and {:?} (broadcast one explicitly)", a.ty(), b.ty())
    });
    (a.clone(), b.clone())
}

fn binary(kind: BinaryKind, a: &Value, b: &Value, location: &'static Location<'static>) -> Value {
    let (a, b) = align(kind.name(), a, b, location);
    check(&a, kind.accepts(a.dtype()), kind.name(), location, || format!("not defined for {:?}", a.ty()));
    single_result(Binary(kind), &[&a, &b], a.ty().clone(), location)
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $method:ident => $kind:ident;)*) => {
        impl Value {$(
            $(#[$doc])*
            #[track_caller]
            pub fn $method(&self) -> Value {
                unary(UnaryKind::$kind, self, Location::caller())
            }
        )*}
    };
}

unary_methods! {
    /// `-x`.
    neg => Neg;
    abs => Abs;
    /// -1, 0 or 1 (NaN stays NaN).
    sign => Sign;
    exp => Exp;
    /// Natural logarithm.
    log => Log;
    /// `log(1 + x)`, accurate near 0.
    log1p => Log1p;
    /// `exp(x) - 1`, accurate near 0.
    expm1 => Expm1;
    sqrt => Sqrt;
    /// `1 / sqrt(x)`.
    rsqrt => Rsqrt;
    tanh => Tanh;
    /// The sigmoid `1 / (1 + exp(-x))`.
    logistic => Logistic;
    sin => Sin;
    cos => Cos;
    /// The error function.
    erf => Erf;
    floor => Floor;
    ceil => Ceil;
    /// Rounds half to even (NumPy's `round`).
    round => Round;
    /// True where the value is neither infinite nor NaN.
    is_finite => IsFinite;
    /// Logical not (pred) or bitwise not (integers).
    not => Not;
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $method:ident => $kind:ident;)*) => {
        impl Value {$(
            $(#[$doc])*
            #[track_caller]
            pub fn $method(&self, other: &Value) -> Value {
                binary(BinaryKind::$kind, self, other, Location::caller())
            }
        )*}
    };
}

binary_methods! {
    add => Add;
    sub => Sub;
    mul => Mul;
    div => Div;
    /// `self ^ other` (floats).
    pow => Pow;
    /// Elementwise maximum (NaN wins, as in XLA).
    max => Max;
    min => Min;
    /// Remainder with the sign of the dividend (C `fmod`).
    rem => Rem;
    /// `atan2(self, other)`.
    atan2 => Atan2;
    /// Logical (pred) or bitwise (integers) and.
    and => And;
    or => Or;
    xor => Xor;
    shift_left => ShiftLeft;
    shift_right_logical => ShiftRightLogical;
}

impl Value {
    fn compare_at(
        &self,
        other: &Value,
        direction: Comparison,
        location: &'static Location<'static>,
    ) -> Value {
        let (a, b) = align("compare", self, other, location);
        single_result(Compare(direction), &[&a, &b], a.ty().with_dtype(DType::Pred), location)
    }

    /// Elementwise comparison; the result is a pred tensor.
    #[track_caller]
    pub fn compare(&self, other: &Value, direction: Comparison) -> Value {
        self.compare_at(other, direction, Location::caller())
    }

    #[track_caller]
    pub fn eq(&self, other: &Value) -> Value {
        self.compare_at(other, Comparison::Eq, Location::caller())
    }

    #[track_caller]
    pub fn ne(&self, other: &Value) -> Value {
        self.compare_at(other, Comparison::Ne, Location::caller())
    }

    #[track_caller]
    pub fn lt(&self, other: &Value) -> Value {
        self.compare_at(other, Comparison::Lt, Location::caller())
    }

    #[track_caller]
    pub fn le(&self, other: &Value) -> Value {
        self.compare_at(other, Comparison::Le, Location::caller())
    }

    #[track_caller]
    pub fn gt(&self, other: &Value) -> Value {
        self.compare_at(other, Comparison::Gt, Location::caller())
    }

    #[track_caller]
    pub fn ge(&self, other: &Value) -> Value {
        self.compare_at(other, Comparison::Ge, Location::caller())
    }

    /// `self ? on_true : on_false` elementwise; `self` is pred. Rank-0 operands broadcast: a
    /// scalar predicate to the branches, scalar branches to the predicate.
    #[track_caller]
    pub fn select(&self, on_true: &Value, on_false: &Value) -> Value {
        let location = Location::caller();
        let (on_true, on_false) = align("select", on_true, on_false, location);
        check(self, self.dtype() == DType::Pred, "select", location, || {
            format!("predicate must be pred, got {:?}", self.ty())
        });
        let (predicate, on_true, on_false) = if self.rank() == 0 && on_true.rank() > 0 {
            (self.broadcast_in_dim_at(on_true.dims(), &[], location), on_true, on_false)
        } else if self.rank() > 0 && on_true.rank() == 0 {
            let spread = |branch: &Value| branch.broadcast_in_dim_at(self.dims(), &[], location);
            (self.clone(), spread(&on_true), spread(&on_false))
        } else {
            (self.clone(), on_true, on_false)
        };
        check(self, predicate.dims() == on_true.dims(), "select", location, || {
            format!("predicate {:?} does not match branches {:?}", self.ty(), on_true.ty())
        });
        single_result(Select, &[&predicate, &on_true, &on_false], on_true.ty().clone(), location)
    }

    /// Converts to `dtype` (floats round to nearest even; float to integer truncates).
    #[track_caller]
    pub fn convert(&self, dtype: DType) -> Value {
        if self.dtype() == dtype {
            return self.clone();
        }
        single_result(Convert, &[self], self.ty().with_dtype(dtype), Location::caller())
    }

    /// Reinterprets the bits as `dtype` of the same width.
    #[track_caller]
    pub fn bitcast_convert(&self, dtype: DType) -> Value {
        let location = Location::caller();
        check(
            self,
            self.dtype().size_in_bytes() == dtype.size_in_bytes(),
            "bitcast_convert",
            location,
            || format!("{:?} and {dtype} have different widths", self.ty()),
        );
        single_result(BitcastConvert, &[self], self.ty().with_dtype(dtype), location)
    }

    /// `1 / self`.
    #[track_caller]
    pub fn reciprocal(&self) -> Value {
        let location = Location::caller();
        binary(BinaryKind::Div, &self.builder().scalar_of(self.dtype(), 1.0), self, location)
    }

    /// `self * self`.
    #[track_caller]
    pub fn square(&self) -> Value {
        binary(BinaryKind::Mul, self, self, Location::caller())
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $kind:ident) => {
        impl ops::$trait<&Value> for &Value {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: &Value) -> Value {
                binary(BinaryKind::$kind, self, other, Location::caller())
            }
        }
        impl ops::$trait<Value> for Value {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: Value) -> Value {
                binary(BinaryKind::$kind, &self, &other, Location::caller())
            }
        }
        impl ops::$trait<&Value> for Value {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: &Value) -> Value {
                binary(BinaryKind::$kind, &self, other, Location::caller())
            }
        }
        impl ops::$trait<Value> for &Value {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: Value) -> Value {
                binary(BinaryKind::$kind, self, &other, Location::caller())
            }
        }
        impl ops::$trait<f64> for &Value {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: f64) -> Value {
                let location = Location::caller();
                binary(BinaryKind::$kind, self, &self.builder().scalar_of(self.dtype(), other), location)
            }
        }
        impl ops::$trait<f64> for Value {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: f64) -> Value {
                let location = Location::caller();
                binary(BinaryKind::$kind, &self, &self.builder().scalar_of(self.dtype(), other), location)
            }
        }
        impl ops::$trait<&Value> for f64 {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: &Value) -> Value {
                let location = Location::caller();
                binary(BinaryKind::$kind, &other.builder().scalar_of(other.dtype(), self), other, location)
            }
        }
        impl ops::$trait<Value> for f64 {
            type Output = Value;
            #[track_caller]
            fn $method(self, other: Value) -> Value {
                let location = Location::caller();
                binary(BinaryKind::$kind, &other.builder().scalar_of(other.dtype(), self), &other, location)
            }
        }
    };
}

operator!(Add, add, Add);
operator!(Sub, sub, Sub);
operator!(Mul, mul, Mul);
operator!(Div, div, Div);

impl ops::Neg for &Value {
    type Output = Value;
    #[track_caller]
    fn neg(self) -> Value {
        unary(UnaryKind::Neg, self, Location::caller())
    }
}

impl ops::Neg for Value {
    type Output = Value;
    #[track_caller]
    fn neg(self) -> Value {
        unary(UnaryKind::Neg, &self, Location::caller())
    }
}
