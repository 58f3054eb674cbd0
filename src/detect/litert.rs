//! The LiteRT CompiledModel C API, the second runtime behind `tflite::Model`: the x86-64 `ai-edge-litert` wheel's
//! `libLiteRtRuntimeCApi.so` exports only these `LiteRt*` functions (the aarch64 one exports both them and the
//! classic `TfLite*` API). Loaded through the same `libloading` handle, so nothing is linked at build time.
//!
//! A `Session` owns the environment, the model, the compiled model (CPU accelerator, a fixed thread count) and
//! one input and one output tensor buffer wrapped around 64-byte-aligned host memory it allocates once at
//! load (LiteRT rejects unaligned host memory). The model file is read once, bounds-checked
//! (`tflite_verify`: LiteRT's own loader does not verify it and crashes on a damaged file) and handed over from
//! memory. A run copies the prepared input bytes in, runs, and copies the
//! output bytes out: nothing is allocated per frame.
//!
//! The one ABI detail we read ourselves is `LiteRtRankedTensorType` (element type, then a layout whose first
//! 32-bit word holds the rank in its low 7 bits, then `int32_t dimensions[8]`). We never build one: the
//! library fills it, we read the element type and dimensions and hand the same bytes back when wrapping host
//! memory; a leading dynamic batch (-1, as Keras exports it) is set to 1 first.

use std::ffi::{c_int, c_void};
use std::path::Path;

use super::tflite::{ElemType, ModelError, TensorInfo};

const STATUS_OK: c_int = 0;
const HW_CPU: c_int = 1;
/// `LiteRtLogSeverity` error: the library's INFO/WARNING lines (compiler plugins absent, XNNPACK created) are
/// noise on an appliance's stderr.
const LOG_ERROR: c_int = 3;
const QUANT_PER_TENSOR: c_int = 1;
const ALIGN: usize = 64;
/// Bytes we give the library for a `LiteRtRankedTensorType` (72 in the 1.x ABI; generous).
const TYPE_BYTES: usize = 256;
const MAX_RANK: usize = 8;

#[repr(C)]
struct Opaque {
    _p: [u8; 0],
}
type Ptr = *mut Opaque;
type Status = c_int;

#[repr(C)]
struct PerTensor {
    scale: f32,
    zero_point: i64,
}

/// A `LiteRtRankedTensorType` as the library fills it (aligned like the C struct).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct RankedType([u8; TYPE_BYTES]);

/// The C functions we use, resolved once (signatures from litert/c/*.h, LiteRT 1.x).
#[derive(Clone, Copy)]
struct Api {
    default_logger: unsafe extern "C" fn() -> Ptr,
    set_min_severity: unsafe extern "C" fn(Ptr, c_int) -> Status,
    create_env: unsafe extern "C" fn(c_int, *const c_void, *mut Ptr) -> Status,
    destroy_env: unsafe extern "C" fn(Ptr),
    model_from_buffer: unsafe extern "C" fn(*const c_void, usize, *mut Ptr) -> Status,
    destroy_model: unsafe extern "C" fn(Ptr),
    main_subgraph: unsafe extern "C" fn(Ptr, *mut usize) -> Status,
    model_subgraph: unsafe extern "C" fn(Ptr, usize, *mut Ptr) -> Status,
    num_inputs: unsafe extern "C" fn(Ptr, *mut usize) -> Status,
    num_outputs: unsafe extern "C" fn(Ptr, *mut usize) -> Status,
    subgraph_input: unsafe extern "C" fn(Ptr, usize, *mut Ptr) -> Status,
    subgraph_output: unsafe extern "C" fn(Ptr, usize, *mut Ptr) -> Status,
    ranked_type: unsafe extern "C" fn(Ptr, *mut RankedType) -> Status,
    quant_type: unsafe extern "C" fn(Ptr, *mut c_int) -> Status,
    per_tensor: unsafe extern "C" fn(Ptr, *mut PerTensor) -> Status,
    create_options: unsafe extern "C" fn(*mut Ptr) -> Status,
    set_accelerators: unsafe extern "C" fn(Ptr, c_int) -> Status,
    destroy_options: unsafe extern "C" fn(Ptr),
    create_cpu_options: unsafe extern "C" fn(*mut Ptr) -> Status,
    find_cpu_options: unsafe extern "C" fn(Ptr, *mut Ptr) -> Status,
    set_cpu_threads: unsafe extern "C" fn(Ptr, c_int) -> Status,
    destroy_opaque: unsafe extern "C" fn(Ptr),
    add_opaque: unsafe extern "C" fn(Ptr, Ptr) -> Status,
    create_compiled: unsafe extern "C" fn(Ptr, Ptr, Ptr, *mut Ptr) -> Status,
    destroy_compiled: unsafe extern "C" fn(Ptr),
    buffer_from_host: unsafe extern "C" fn(*const RankedType, *mut c_void, usize, *const c_void, *mut Ptr) -> Status,
    destroy_buffer: unsafe extern "C" fn(Ptr),
    run: unsafe extern "C" fn(Ptr, usize, usize, *mut Ptr, usize, *mut Ptr) -> Status,
}

impl Api {
    fn resolve(lib: &libloading::Library, path: &Path) -> Result<Api, ModelError> {
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the field's type matches the LiteRT C API (litert/c/*.h) declaration of this symbol.
                unsafe { super::tflite::symbol(lib, path, $name)? }
            };
        }
        Ok(Api {
            default_logger: sym!("LiteRtGetDefaultLogger"),
            set_min_severity: sym!("LiteRtSetMinLoggerSeverity"),
            create_env: sym!("LiteRtCreateEnvironment"),
            destroy_env: sym!("LiteRtDestroyEnvironment"),
            model_from_buffer: sym!("LiteRtCreateModelFromBuffer"),
            destroy_model: sym!("LiteRtDestroyModel"),
            main_subgraph: sym!("LiteRtGetMainModelSubgraphIndex"),
            model_subgraph: sym!("LiteRtGetModelSubgraph"),
            num_inputs: sym!("LiteRtGetNumSubgraphInputs"),
            num_outputs: sym!("LiteRtGetNumSubgraphOutputs"),
            subgraph_input: sym!("LiteRtGetSubgraphInput"),
            subgraph_output: sym!("LiteRtGetSubgraphOutput"),
            ranked_type: sym!("LiteRtGetRankedTensorType"),
            quant_type: sym!("LiteRtGetQuantizationTypeId"),
            per_tensor: sym!("LiteRtGetPerTensorQuantization"),
            create_options: sym!("LiteRtCreateOptions"),
            set_accelerators: sym!("LiteRtSetOptionsHardwareAccelerators"),
            destroy_options: sym!("LiteRtDestroyOptions"),
            create_cpu_options: sym!("LiteRtCreateCpuOptions"),
            find_cpu_options: sym!("LiteRtFindCpuOptions"),
            set_cpu_threads: sym!("LiteRtSetCpuOptionsNumThread"),
            destroy_opaque: sym!("LiteRtDestroyOpaqueOptions"),
            add_opaque: sym!("LiteRtAddOpaqueOptions"),
            create_compiled: sym!("LiteRtCreateCompiledModel"),
            destroy_compiled: sym!("LiteRtDestroyCompiledModel"),
            buffer_from_host: sym!("LiteRtCreateTensorBufferFromHostMemory"),
            destroy_buffer: sym!("LiteRtDestroyTensorBuffer"),
            run: sym!("LiteRtRunCompiledModel"),
        })
    }
}

/// Whether `lib` carries the CompiledModel API.
pub fn available(lib: &libloading::Library) -> bool {
    // SAFETY: only looks the symbol up; never called through this type.
    unsafe { lib.get::<unsafe extern "C" fn()>(b"LiteRtCreateCompiledModel\0").is_ok() }
}

/// 64-byte-aligned host memory handed to a tensor buffer; allocated once.
struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + ALIGN];
        let off = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { buf, off, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// A compiled model with its two tensor buffers. Fields are released in Drop, buffers first.
pub struct Session {
    api: Api,
    env: Ptr,
    model: Ptr,
    options: Ptr,
    compiled: Ptr,
    in_buf: Ptr,
    out_buf: Ptr,
    in_mem: Aligned,
    out_mem: Aligned,
    /// The verified model file; LiteRT reads it in place for the model's lifetime.
    file: Aligned,
}

impl Session {
    /// Compiles `path` for the CPU with `threads` threads; returns the session and its input and output tensors.
    pub fn load(
        lib: &libloading::Library,
        library: &Path,
        path: &Path,
        threads: u32,
    ) -> Result<(Session, TensorInfo, TensorInfo), ModelError> {
        let api = Api::resolve(lib, library)?;
        let file_err = |msg: &str| ModelError::ModelFile { path: path.to_path_buf(), msg: msg.to_owned() };
        let bytes = std::fs::read(path).map_err(|e| file_err(&e.to_string()))?;
        super::tflite_verify::verify(&bytes).map_err(|why| file_err(&format!("damaged model file: {why}")))?;
        let mut file = Aligned::new(bytes.len());
        file.bytes().copy_from_slice(&bytes);
        let mut me = Session {
            api,
            env: std::ptr::null_mut(),
            model: std::ptr::null_mut(),
            options: std::ptr::null_mut(),
            compiled: std::ptr::null_mut(),
            in_buf: std::ptr::null_mut(),
            out_buf: std::ptr::null_mut(),
            in_mem: Aligned::new(0),
            out_mem: Aligned::new(0),
            file,
        };
        let call = |s: Status, what: &'static str| if s == STATUS_OK { Ok(()) } else { Err(ModelError::Call(what)) };
        // SAFETY: plain C API calls with valid out-pointers; every created handle is stored in `me` at once, so
        // an early return releases it in Drop.
        unsafe {
            let logger = (api.default_logger)();
            if !logger.is_null() {
                (api.set_min_severity)(logger, LOG_ERROR);
            }
            call((api.create_env)(0, std::ptr::null(), &mut me.env), "LiteRtCreateEnvironment")?;
            let (p, n) = (me.file.bytes().as_ptr(), me.file.len);
            if (api.model_from_buffer)(p.cast(), n, &mut me.model) != STATUS_OK || me.model.is_null() {
                me.model = std::ptr::null_mut();
                return Err(file_err("LiteRT rejected the file"));
            }
            call((api.create_options)(&mut me.options), "LiteRtCreateOptions")?;
            call((api.set_accelerators)(me.options, HW_CPU), "LiteRtSetOptionsHardwareAccelerators")?;
            let mut cpu = std::ptr::null_mut();
            call((api.create_cpu_options)(&mut cpu), "LiteRtCreateCpuOptions")?;
            let mut cpu_opts = std::ptr::null_mut();
            let n = threads.clamp(1, 64) as c_int;
            if (api.find_cpu_options)(cpu, &mut cpu_opts) != STATUS_OK
                || (api.set_cpu_threads)(cpu_opts, n) != STATUS_OK
                || (api.add_opaque)(me.options, cpu) != STATUS_OK
            {
                (api.destroy_opaque)(cpu);
                return Err(ModelError::Call("LiteRtSetCpuOptionsNumThread"));
            }
            if (api.create_compiled)(me.env, me.model, me.options, &mut me.compiled) != STATUS_OK {
                me.compiled = std::ptr::null_mut();
                return Err(file_err("LiteRT cannot compile it for the CPU (unsupported ops?)"));
            }
        }
        let (mut in_ty, input) = me.tensor(true, path)?;
        let (mut out_ty, output) = me.tensor(false, path)?;
        me.in_mem = Aligned::new(input.bytes);
        me.out_mem = Aligned::new(output.bytes);
        // SAFETY: the tensor types were filled by the library; the host memory lives in `me` (never moved: the
        // Vec's heap block stays put) and outlives the buffers, which Drop destroys first.
        unsafe {
            let (p, n) = (me.in_mem.bytes().as_mut_ptr(), input.bytes);
            call((api.buffer_from_host)(&mut in_ty, p.cast(), n, std::ptr::null(), &mut me.in_buf), "input buffer")?;
            let (p, n) = (me.out_mem.bytes().as_mut_ptr(), output.bytes);
            call((api.buffer_from_host)(&mut out_ty, p.cast(), n, std::ptr::null(), &mut me.out_buf), "output buffer")?;
        }
        Ok((me, input, output))
    }

    /// The model's single input (or output) tensor: its type bytes (batch fixed to 1) and what we check.
    fn tensor(&self, input: bool, path: &Path) -> Result<(RankedType, TensorInfo), ModelError> {
        let bad = |msg: String| ModelError::Tensors { path: path.to_path_buf(), msg };
        let a = &self.api;
        let mut sg = std::ptr::null_mut();
        let mut t = std::ptr::null_mut();
        let mut ty = RankedType([0; TYPE_BYTES]);
        let (mut idx, mut count, mut q_kind) = (0usize, 0usize, 0 as c_int);
        let mut q = PerTensor { scale: 0.0, zero_point: 0 };
        // SAFETY: getters on our live model with valid out-pointers.
        unsafe {
            if (a.main_subgraph)(self.model, &mut idx) != STATUS_OK
                || (a.model_subgraph)(self.model, idx, &mut sg) != STATUS_OK
            {
                return Err(bad("no main subgraph".into()));
            }
            let (n, get) = if input { (a.num_inputs, a.subgraph_input) } else { (a.num_outputs, a.subgraph_output) };
            if n(sg, &mut count) != STATUS_OK || count != 1 {
                return Err(bad(format!("expected 1 input and 1 output, found {count} {}s", which(input))));
            }
            if get(sg, 0, &mut t) != STATUS_OK || (a.ranked_type)(t, &mut ty) != STATUS_OK {
                return Err(bad(format!("{} tensor has no ranked type", which(input))));
            }
            if (a.quant_type)(t, &mut q_kind) == STATUS_OK && q_kind == QUANT_PER_TENSOR {
                (a.per_tensor)(t, &mut q);
            }
        }
        let word = |ty: &RankedType, i: usize| i32::from_ne_bytes([ty.0[i], ty.0[i + 1], ty.0[i + 2], ty.0[i + 3]]);
        let elem = ElemType::from_c(word(&ty, 0))
            .ok_or_else(|| bad(format!("{} tensor type is not float32, uint8 or int8", which(input))))?;
        let rank = (word(&ty, 4) & 0x7f) as usize;
        if rank > MAX_RANK {
            return Err(bad(format!("{} tensor rank {rank}", which(input))));
        }
        let mut dims = Vec::with_capacity(rank);
        for i in 0..rank {
            let mut d = word(&ty, 8 + 4 * i);
            if i == 0 && d == -1 {
                d = 1;
                ty.0[8..12].copy_from_slice(&1i32.to_ne_bytes());
            }
            dims.push(usize::try_from(d).map_err(|_| bad(format!("{} dimension {d}", which(input))))?);
        }
        let bytes = dims.iter().try_fold(elem.size(), |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
        let zero_point = i32::try_from(q.zero_point).map_err(|_| bad("zero point out of range".into()))?;
        Ok((ty, TensorInfo { elem, dims, bytes, scale: q.scale, zero_point }))
    }

    /// One inference: `input` is the input tensor's bytes, `output` receives the output tensor's bytes.
    pub fn run(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), ModelError> {
        let n_in = input.len().min(self.in_mem.len);
        self.in_mem.bytes()[..n_in].copy_from_slice(&input[..n_in]);
        let mut ins = [self.in_buf];
        let mut outs = [self.out_buf];
        // SAFETY: live compiled model and buffers created for its signature 0 input and output.
        let s = unsafe { (self.api.run)(self.compiled, 0, 1, ins.as_mut_ptr(), 1, outs.as_mut_ptr()) };
        if s != STATUS_OK {
            return Err(ModelError::Call("LiteRtRunCompiledModel"));
        }
        let n_out = output.len().min(self.out_mem.len);
        output[..n_out].copy_from_slice(&self.out_mem.bytes()[..n_out]);
        Ok(())
    }
}

fn which(input: bool) -> &'static str {
    if input { "input" } else { "output" }
}

impl Drop for Session {
    fn drop(&mut self) {
        let a = self.api;
        // SAFETY: each handle was created by this library and is released exactly once, dependents first.
        unsafe {
            for b in [self.in_buf, self.out_buf] {
                if !b.is_null() {
                    (a.destroy_buffer)(b);
                }
            }
            if !self.compiled.is_null() {
                (a.destroy_compiled)(self.compiled);
            }
            if !self.options.is_null() {
                (a.destroy_options)(self.options);
            }
            if !self.model.is_null() {
                (a.destroy_model)(self.model);
            }
            if !self.env.is_null() {
                (a.destroy_env)(self.env);
            }
        }
    }
}
