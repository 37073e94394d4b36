//! A small EVM assembler: opcodes, minimal pushes and named jump labels.

use alloy_primitives::{Address, Bytes, U256};
use lockstep_executor::revm::bytecode::opcode::{
    CODECOPY, DUP1, JUMP, JUMPDEST, JUMPI, MLOAD, MSTORE, PUSH1, PUSH2, RETURN,
};
use std::collections::HashMap;

/// Builds bytecode; jumps name labels that may be placed later.
#[derive(Debug, Default, Clone)]
pub struct Asm {
    code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends opcodes.
    pub fn ops(&mut self, ops: &[u8]) -> &mut Self {
        self.code.extend_from_slice(ops);
        self
    }

    /// Pushes a small constant.
    pub fn push(&mut self, value: u64) -> &mut Self {
        self.push_word(U256::from(value))
    }

    /// Pushes `value` with the shortest PUSHn (PUSH1 for zero, so it runs before Shanghai).
    pub fn push_word(&mut self, value: U256) -> &mut Self {
        let bytes = value.to_be_bytes_trimmed_vec();
        let len = bytes.len().max(1);
        self.code.push(PUSH1 + (len as u8 - 1));
        if bytes.is_empty() {
            self.code.push(0);
        }
        self.code.extend_from_slice(&bytes);
        self
    }

    pub fn push_address(&mut self, address: Address) -> &mut Self {
        self.push_word(U256::from_be_slice(address.as_slice()))
    }

    /// `mem[offset]` onto the stack.
    pub fn load(&mut self, offset: u64) -> &mut Self {
        self.push(offset).ops(&[MLOAD])
    }

    /// Top of the stack into `mem[offset]`.
    pub fn store(&mut self, offset: u64) -> &mut Self {
        self.push(offset).ops(&[MSTORE])
    }

    /// Places a label (a JUMPDEST).
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        let previous = self.labels.insert(name, self.code.len());
        assert!(previous.is_none(), "label {name} placed twice");
        self.code.push(JUMPDEST);
        self
    }

    pub fn jump(&mut self, label: &'static str) -> &mut Self {
        self.push_label(label).ops(&[JUMP])
    }

    /// Jumps to `label` if the top of the stack is non-zero.
    pub fn jumpi(&mut self, label: &'static str) -> &mut Self {
        self.push_label(label).ops(&[JUMPI])
    }

    fn push_label(&mut self, label: &'static str) -> &mut Self {
        self.code.push(PUSH2);
        self.fixups.push((self.code.len(), label));
        self.code.extend_from_slice(&[0, 0]);
        self
    }

    /// The bytecode, with every jump resolved. Panics on an unplaced label: a bug in the
    /// contract source, not an input error.
    pub fn build(&self) -> Bytes {
        let mut code = self.code.clone();
        for (at, label) in &self.fixups {
            let target =
                *self.labels.get(label).unwrap_or_else(|| panic!("label {label} never placed"));
            code[*at..*at + 2].copy_from_slice(&(target as u16).to_be_bytes());
        }
        code.into()
    }
}

/// Init code that deploys `runtime` unchanged.
pub fn deployer(runtime: &[u8]) -> Bytes {
    // PUSH2 len DUP1 PUSH1 12 PUSH1 0 CODECOPY PUSH1 0 RETURN (12 bytes), then the runtime.
    let [hi, lo] = (runtime.len() as u16).to_be_bytes();
    let mut code = vec![PUSH2, hi, lo, DUP1, PUSH1, 12, PUSH1, 0, CODECOPY, PUSH1, 0, RETURN];
    code.extend_from_slice(runtime);
    code.into()
}
