//! The optional CNN detector: our own small binding to the TensorFlow Lite runtime, loaded at run time with
//! `dlopen` (libloading), so the binary has no build-time TFLite dependency and runs without the library.
//! The library is `libLiteRtRuntimeCApi.so` from the `ai-edge-litert` wheel (see models/README.md). Two C APIs:
//! the classic `TfLite*` interpreter API (the aarch64 wheel exports it; used when present, the path the boards
//! were validated on) and the LiteRT CompiledModel API (`litert.rs`; the only one the x86-64 wheel exports).
//!
//! A `Model` owns the library handle, the runtime's model objects, and fixed input/output buffers sized
//! from the model once at load. Classifying a frame crops and box-reduces it into the input buffer
//! (`model_input`), copies it in, invokes and dequantises the two outputs (fire, smoke). Nothing is allocated
//! per frame. Everything read from the model file is validated (tensor count, type, shape, byte size), so a
//! wrong or corrupt model is an error, never a panic.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

use super::model_input::{self, PrepError, Region};

/// Largest model input side we accept; bounds the buffers allocated from the model's own shape.
pub const MAX_SIDE: usize = 512;
/// Largest model file we read (the project's models are tens of KB).
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// One function of a runtime library, copied out as a plain pointer that stays valid while `lib` is loaded; a
/// missing symbol is a [`ModelError::Symbol`] naming the library. Shared by the TfLite and LiteRT bindings.
///
/// # Safety
/// `T` must be the function-pointer type of the symbol's C declaration.
pub(super) unsafe fn symbol<T: Copy>(
    lib: &libloading::Library,
    path: &Path,
    name: &'static str,
) -> Result<T, ModelError> {
    // SAFETY: the caller guarantees `T` matches the symbol's declaration.
    match unsafe { lib.get::<T>(name.as_bytes()) } {
        Ok(s) => Ok(*s),
        Err(e) => Err(ModelError::Symbol { path: path.to_path_buf(), symbol: name, msg: e.to_string() }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load TFLite library {path}: {msg}")]
    Library { path: PathBuf, msg: String },
    #[error("TFLite/LiteRT library {path} lacks symbol {symbol}: {msg}")]
    Symbol { path: PathBuf, symbol: &'static str, msg: String },
    #[error("model {path}: {msg}")]
    ModelFile { path: PathBuf, msg: String },
    #[error("model {path}: unsupported tensors: {msg}")]
    Tensors { path: PathBuf, msg: String },
    #[error("TFLite {0} failed")]
    Call(&'static str),
    #[error("frame: {0}")]
    Frame(#[from] PrepError),
}

// TfLiteType values (tensorflow/lite/core/c/c_api_types.h).
const TFLITE_FLOAT32: c_int = 1;
const TFLITE_UINT8: c_int = 3;
const TFLITE_INT8: c_int = 9;
const TFLITE_OK: c_int = 0;

#[repr(C)]
#[derive(Clone, Copy)]
struct QuantParams {
    scale: f32,
    zero_point: i32,
}

#[repr(C)]
struct Opaque {
    _p: [u8; 0],
}

type Ptr = *mut Opaque;

/// The C API functions we use, resolved once from the library.
#[derive(Clone, Copy)]
struct Api {
    version: unsafe extern "C" fn() -> *const c_char,
    model_create_from_file: unsafe extern "C" fn(*const c_char) -> Ptr,
    model_delete: unsafe extern "C" fn(Ptr),
    options_create: unsafe extern "C" fn() -> Ptr,
    options_set_num_threads: unsafe extern "C" fn(Ptr, i32),
    options_delete: unsafe extern "C" fn(Ptr),
    interpreter_create: unsafe extern "C" fn(Ptr, Ptr) -> Ptr,
    interpreter_delete: unsafe extern "C" fn(Ptr),
    allocate_tensors: unsafe extern "C" fn(Ptr) -> c_int,
    invoke: unsafe extern "C" fn(Ptr) -> c_int,
    input_count: unsafe extern "C" fn(Ptr) -> i32,
    output_count: unsafe extern "C" fn(Ptr) -> i32,
    input_tensor: unsafe extern "C" fn(Ptr, i32) -> Ptr,
    output_tensor: unsafe extern "C" fn(Ptr, i32) -> Ptr,
    tensor_type: unsafe extern "C" fn(Ptr) -> c_int,
    tensor_num_dims: unsafe extern "C" fn(Ptr) -> i32,
    tensor_dim: unsafe extern "C" fn(Ptr, i32) -> i32,
    tensor_byte_size: unsafe extern "C" fn(Ptr) -> usize,
    tensor_quant: unsafe extern "C" fn(Ptr) -> QuantParams,
    copy_from_buffer: unsafe extern "C" fn(Ptr, *const c_void, usize) -> c_int,
    copy_to_buffer: unsafe extern "C" fn(Ptr, *mut c_void, usize) -> c_int,
}

impl Api {
    /// Resolves every symbol; the function pointers stay valid while `lib` is loaded.
    fn resolve(lib: &libloading::Library, path: &Path) -> Result<Api, ModelError> {
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the field's type matches the TFLite C API (c_api.h) declaration of this symbol.
                unsafe { super::tflite::symbol(lib, path, $name)? }
            };
        }
        Ok(Api {
            version: sym!("TfLiteVersion"),
            model_create_from_file: sym!("TfLiteModelCreateFromFile"),
            model_delete: sym!("TfLiteModelDelete"),
            options_create: sym!("TfLiteInterpreterOptionsCreate"),
            options_set_num_threads: sym!("TfLiteInterpreterOptionsSetNumThreads"),
            options_delete: sym!("TfLiteInterpreterOptionsDelete"),
            interpreter_create: sym!("TfLiteInterpreterCreate"),
            interpreter_delete: sym!("TfLiteInterpreterDelete"),
            allocate_tensors: sym!("TfLiteInterpreterAllocateTensors"),
            invoke: sym!("TfLiteInterpreterInvoke"),
            input_count: sym!("TfLiteInterpreterGetInputTensorCount"),
            output_count: sym!("TfLiteInterpreterGetOutputTensorCount"),
            input_tensor: sym!("TfLiteInterpreterGetInputTensor"),
            output_tensor: sym!("TfLiteInterpreterGetOutputTensor"),
            tensor_type: sym!("TfLiteTensorType"),
            tensor_num_dims: sym!("TfLiteTensorNumDims"),
            tensor_dim: sym!("TfLiteTensorDim"),
            tensor_byte_size: sym!("TfLiteTensorByteSize"),
            tensor_quant: sym!("TfLiteTensorQuantizationParams"),
            copy_from_buffer: sym!("TfLiteTensorCopyFromBuffer"),
            copy_to_buffer: sym!("TfLiteTensorCopyToBuffer"),
        })
    }
}

/// Element type of a model's input or output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    U8,
    I8,
}

impl ElemType {
    pub(super) fn from_c(t: c_int) -> Option<ElemType> {
        match t {
            TFLITE_FLOAT32 => Some(ElemType::F32),
            TFLITE_UINT8 => Some(ElemType::U8),
            TFLITE_INT8 => Some(ElemType::I8),
            _ => None,
        }
    }

    pub(super) fn size(self) -> usize {
        match self {
            ElemType::F32 => 4,
            ElemType::U8 | ElemType::I8 => 1,
        }
    }
}

/// What `model check` prints about a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub elem: ElemType,
    pub dims: Vec<usize>,
    pub bytes: usize,
    pub scale: f32,
    pub zero_point: i32,
}

/// The classic interpreter's handles; released in Drop, interpreter first.
struct Classic {
    api: Api,
    model: Ptr,
    options: Ptr,
    interp: Ptr,
}

enum Backend {
    Classic(Classic),
    LiteRt(super::litert::Session),
}

/// A loaded model and runtime with fixed buffers. Owns the library: dropping it frees the runtime's objects
/// (the backend, declared first), then unloads the library.
pub struct Model {
    backend: Backend,
    input: TensorInfo,
    output: TensorInfo,
    in_w: usize,
    in_h: usize,
    /// The frame reduced to the input size, RGB u8.
    rgb: Vec<u8>,
    /// Byte image of the input tensor (f32 native-endian, u8 or i8).
    in_bytes: Vec<u8>,
    out_bytes: [u8; 8],
    /// RGB value -> quantised input byte, from the input tensor's quantisation (u8/i8 inputs).
    quant_lut: [u8; 256],
    version: String,
    // Declared last so it is unloaded after the backend (declared first) released the runtime objects.
    _lib: libloading::Library,
}

// SAFETY: a TFLite interpreter (or LiteRT compiled model) may be used from any thread as long as calls are not
// concurrent; `Model` is not Sync and every call takes `&mut self`, so one thread at a time owns it.
unsafe impl Send for Model {}

impl Model {
    /// Loads the library and the model, checks the model's tensors, and allocates the buffers.
    pub fn load(library: &Path, model: &Path, threads: u32) -> Result<Model, ModelError> {
        let meta = std::fs::metadata(model)
            .map_err(|e| ModelError::ModelFile { path: model.to_path_buf(), msg: e.to_string() })?;
        if !meta.is_file() || meta.len() > MAX_MODEL_BYTES || meta.len() < 16 {
            return Err(ModelError::ModelFile {
                path: model.to_path_buf(),
                msg: format!("not a plausible model file ({} bytes)", meta.len()),
            });
        }
        check_identifier(model)?;
        // SAFETY: loading runs the library's initialisers; the library is the TFLite C API the operator named.
        let lib = unsafe { libloading::Library::new(library) }
            .map_err(|e| ModelError::Library { path: library.to_path_buf(), msg: e.to_string() })?;
        let (backend, input, output, version) = match Api::resolve(&lib, library) {
            Ok(api) => {
                let c = Classic::load(api, model, threads)?;
                let (i, o) = c.io(model)?;
                let v = c.version();
                (Backend::Classic(c), i, o, v)
            }
            Err(e) if !super::litert::available(&lib) => return Err(e),
            Err(_) => {
                let (s, i, o) = super::litert::Session::load(&lib, library, model, threads)?;
                (Backend::LiteRt(s), i, o, String::from("LiteRT CompiledModel API"))
            }
        };
        let mut me = Model {
            backend,
            input: output.clone(),
            output,
            in_w: 0,
            in_h: 0,
            rgb: Vec::new(),
            in_bytes: Vec::new(),
            out_bytes: [0; 8],
            quant_lut: [0; 256],
            version,
            _lib: lib,
        };
        me.validate(model, input)?;
        Ok(me)
    }

    fn validate(&mut self, path: &Path, input: TensorInfo) -> Result<(), ModelError> {
        let bad = |msg: String| ModelError::Tensors { path: path.to_path_buf(), msg };
        let output = self.output.clone();
        let [1, h, w, 3] = input.dims[..] else {
            return Err(bad(format!("input shape {:?}, expected [1, H, W, 3]", input.dims)));
        };
        if !(8..=MAX_SIDE).contains(&h) || !(8..=MAX_SIDE).contains(&w) {
            return Err(bad(format!("input {w}x{h} outside 8..={MAX_SIDE}")));
        }
        if input.bytes != h * w * 3 * input.elem.size() {
            return Err(bad(format!("input byte size {} does not match its shape", input.bytes)));
        }
        if output.dims[..] != [1, 2] || output.bytes != 2 * output.elem.size() {
            return Err(bad(format!(
                "output shape {:?} ({} bytes), expected [1, 2] (fire, smoke)",
                output.dims, output.bytes
            )));
        }
        for (name, t) in [("input", &input), ("output", &output)] {
            if t.elem != ElemType::F32 && !(t.scale.is_finite() && t.scale > 0.0) {
                return Err(bad(format!("quantised {name} has scale {}", t.scale)));
            }
        }
        for (v, q) in self.quant_lut.iter_mut().enumerate() {
            *q = quantise(v as f32, &input);
        }
        self.in_w = w;
        self.in_h = h;
        self.rgb = vec![0; w * h * 3];
        self.in_bytes = vec![0; input.bytes];
        self.input = input;
        Ok(())
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn input(&self) -> &TensorInfo {
        &self.input
    }

    pub fn output(&self) -> &TensorInfo {
        &self.output
    }

    /// Model input width and height.
    pub fn input_size(&self) -> (usize, usize) {
        (self.in_w, self.in_h)
    }

    /// Scores an RGB24 frame (or a region of it): (fire, smoke) in 0..=1.
    pub fn classify_rgb(
        &mut self,
        px: &[u8],
        width: usize,
        height: usize,
        region: Option<Region>,
    ) -> Result<(f32, f32), ModelError> {
        model_input::rgb_to_input(px, width, height, region, &mut self.rgb, self.in_w, self.in_h)?;
        self.run()
    }

    /// Scores a YUYV frame (or a region of it): (fire, smoke) in 0..=1.
    pub fn classify_yuyv(
        &mut self,
        px: &[u8],
        width: usize,
        height: usize,
        region: Option<Region>,
    ) -> Result<(f32, f32), ModelError> {
        model_input::yuyv_to_input(px, width, height, region, &mut self.rgb, self.in_w, self.in_h)?;
        self.run()
    }

    /// Scores an input that is already `input_size()` RGB (tests, reference checks).
    pub fn classify_input(&mut self, rgb: &[u8]) -> Result<(f32, f32), ModelError> {
        if rgb.len() != self.rgb.len() {
            return Err(ModelError::Frame(PrepError::OutputSize { need: self.rgb.len(), have: rgb.len() }));
        }
        self.rgb.copy_from_slice(rgb);
        self.run()
    }

    /// The raw output bytes of the last run (quantised models: the u8/i8 values).
    pub fn raw_output(&self) -> &[u8] {
        &self.out_bytes[..self.output.bytes.min(8)]
    }

    fn run(&mut self) -> Result<(f32, f32), ModelError> {
        match self.input.elem {
            ElemType::F32 => {
                for (dst, &v) in self.in_bytes.chunks_exact_mut(4).zip(self.rgb.iter()) {
                    dst.copy_from_slice(&f32::from(v).to_ne_bytes());
                }
            }
            ElemType::U8 | ElemType::I8 => {
                for (dst, &v) in self.in_bytes.iter_mut().zip(self.rgb.iter()) {
                    *dst = self.quant_lut[usize::from(v)];
                }
            }
        }
        let n_out = self.output.bytes.min(self.out_bytes.len());
        match &mut self.backend {
            Backend::Classic(c) => c.invoke(&self.in_bytes, &mut self.out_bytes[..n_out])?,
            Backend::LiteRt(l) => l.run(&self.in_bytes, &mut self.out_bytes[..n_out])?,
        }
        let o = &self.output;
        let value = |i: usize| -> f32 {
            match o.elem {
                ElemType::F32 => f32::from_ne_bytes([
                    self.out_bytes[4 * i],
                    self.out_bytes[4 * i + 1],
                    self.out_bytes[4 * i + 2],
                    self.out_bytes[4 * i + 3],
                ]),
                ElemType::U8 => (f32::from(self.out_bytes[i]) - o.zero_point as f32) * o.scale,
                ElemType::I8 => (f32::from(self.out_bytes[i] as i8) - o.zero_point as f32) * o.scale,
            }
        };
        let clean = |v: f32| if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
        Ok((clean(value(0)), clean(value(1))))
    }
}

impl Classic {
    /// Builds the interpreter for `model` and allocates its tensors.
    fn load(api: Api, model: &Path, threads: u32) -> Result<Classic, ModelError> {
        let cpath = CString::new(model.as_os_str().as_encoded_bytes())
            .map_err(|_| ModelError::ModelFile { path: model.to_path_buf(), msg: "path contains NUL".into() })?;
        // SAFETY: valid C string; returns null on failure (TFLite verifies the flatbuffer).
        let m = unsafe { (api.model_create_from_file)(cpath.as_ptr()) };
        if m.is_null() {
            return Err(ModelError::ModelFile { path: model.to_path_buf(), msg: "TFLite rejected the file".into() });
        }
        // From here on a partially built Classic frees whatever is non-null on error.
        let mut me = Classic { api, model: m, options: std::ptr::null_mut(), interp: std::ptr::null_mut() };
        // SAFETY: plain C API calls on handles created above; null results are checked.
        unsafe {
            me.options = (api.options_create)();
            if me.options.is_null() {
                return Err(ModelError::Call("TfLiteInterpreterOptionsCreate"));
            }
            (api.options_set_num_threads)(me.options, threads.clamp(1, 64) as i32);
            me.interp = (api.interpreter_create)(me.model, me.options);
            if me.interp.is_null() {
                return Err(ModelError::ModelFile {
                    path: model.to_path_buf(),
                    msg: "TFLite cannot build an interpreter for it (unsupported ops?)".into(),
                });
            }
            if (api.allocate_tensors)(me.interp) != TFLITE_OK {
                return Err(ModelError::Call("TfLiteInterpreterAllocateTensors"));
            }
        }
        Ok(me)
    }

    fn version(&self) -> String {
        // SAFETY: TfLiteVersion returns a static NUL-terminated string (or null, handled).
        unsafe {
            let v = (self.api.version)();
            if v.is_null() { String::from("?") } else { CStr::from_ptr(v).to_string_lossy().into_owned() }
        }
    }

    fn tensor_info(&self, t: Ptr) -> Option<TensorInfo> {
        if t.is_null() {
            return None;
        }
        // SAFETY: t is a tensor of our live interpreter.
        unsafe {
            let n = (self.api.tensor_num_dims)(t);
            if !(0..=8).contains(&n) {
                return None;
            }
            let dims: Vec<usize> = (0..n).map(|i| usize::try_from((self.api.tensor_dim)(t, i)).unwrap_or(0)).collect();
            let q = (self.api.tensor_quant)(t);
            Some(TensorInfo {
                elem: ElemType::from_c((self.api.tensor_type)(t))?,
                dims,
                bytes: (self.api.tensor_byte_size)(t),
                scale: q.scale,
                zero_point: q.zero_point,
            })
        }
    }

    /// The single input and output tensors.
    fn io(&self, path: &Path) -> Result<(TensorInfo, TensorInfo), ModelError> {
        let bad = |msg: String| ModelError::Tensors { path: path.to_path_buf(), msg };
        // SAFETY: counts and tensor getters of our live interpreter.
        let (ni, no) = unsafe { ((self.api.input_count)(self.interp), (self.api.output_count)(self.interp)) };
        if ni != 1 || no != 1 {
            return Err(bad(format!("expected 1 input and 1 output, found {ni} and {no}")));
        }
        // SAFETY: index 0 exists (counts checked above).
        let (ti, to) = unsafe { ((self.api.input_tensor)(self.interp, 0), (self.api.output_tensor)(self.interp, 0)) };
        let input =
            self.tensor_info(ti).ok_or_else(|| bad("input tensor type is not float32, uint8 or int8".into()))?;
        let output =
            self.tensor_info(to).ok_or_else(|| bad("output tensor type is not float32, uint8 or int8".into()))?;
        Ok((input, output))
    }

    fn invoke(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), ModelError> {
        // SAFETY: tensors of our live interpreter; buffer sizes equal the tensors' byte sizes (validated).
        unsafe {
            let ti = (self.api.input_tensor)(self.interp, 0);
            if (self.api.copy_from_buffer)(ti, input.as_ptr().cast(), input.len()) != TFLITE_OK {
                return Err(ModelError::Call("TfLiteTensorCopyFromBuffer"));
            }
            if (self.api.invoke)(self.interp) != TFLITE_OK {
                return Err(ModelError::Call("TfLiteInterpreterInvoke"));
            }
            let to = (self.api.output_tensor)(self.interp, 0);
            if (self.api.copy_to_buffer)(to, output.as_mut_ptr().cast(), output.len()) != TFLITE_OK {
                return Err(ModelError::Call("TfLiteTensorCopyToBuffer"));
            }
        }
        Ok(())
    }
}

impl Drop for Classic {
    fn drop(&mut self) {
        // SAFETY: each handle was created by this library and is released exactly once, interpreter first.
        unsafe {
            if !self.interp.is_null() {
                (self.api.interpreter_delete)(self.interp);
            }
            if !self.options.is_null() {
                (self.api.options_delete)(self.options);
            }
            if !self.model.is_null() {
                (self.api.model_delete)(self.model);
            }
        }
    }
}

/// A real-valued input (0..255) in the input tensor's quantisation: q = round(v / scale) + zero_point.
fn quantise(v: f32, t: &TensorInfo) -> u8 {
    let q = (v / t.scale).round() as i32 + t.zero_point;
    match t.elem {
        ElemType::I8 => q.clamp(-128, 127) as i8 as u8,
        _ => q.clamp(0, 255) as u8,
    }
}

/// TFLite flatbuffers carry the file identifier "TFL3" at bytes 4..8; checking it first turns "this is a JPEG"
/// into a clear message before the library sees the file.
fn check_identifier(path: &Path) -> Result<(), ModelError> {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| ModelError::ModelFile { path: path.to_path_buf(), msg: e.to_string() })?;
    if &head[4..8] != b"TFL3" {
        return Err(ModelError::ModelFile {
            path: path.to_path_buf(),
            msg: "not a TFLite flatbuffer (no TFL3 identifier)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(elem: ElemType, scale: f32, zero_point: i32) -> TensorInfo {
        TensorInfo { elem, dims: vec![], bytes: 0, scale, zero_point }
    }

    #[test]
    fn quantisation_of_inputs() {
        let u = info(ElemType::U8, 1.0, 0);
        assert_eq!([quantise(0.0, &u), quantise(255.0, &u)], [0, 255]);
        let i = info(ElemType::I8, 1.0, -128);
        assert_eq!([quantise(0.0, &i) as i8, quantise(255.0, &i) as i8], [-128, 127]);
        let half = info(ElemType::U8, 2.0, 10);
        assert_eq!([quantise(0.0, &half), quantise(101.0, &half), quantise(255.0, &half)], [10, 61, 138]);
        let clamp = info(ElemType::U8, 0.5, 0);
        assert_eq!(quantise(200.0, &clamp), 255);
    }

    #[test]
    fn missing_library_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ember-tflite-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("m.tflite");
        std::fs::write(&model, b"\0\0\0\0TFL3 plus some bytes").unwrap();
        let err = Model::load(&dir.join("nope.so"), &model, 1).err().unwrap();
        assert!(matches!(err, ModelError::Library { .. }), "{err}");
        std::fs::write(&model, b"\xff\xd8\xff\xe0 a JPEG, not a model").unwrap();
        let err = Model::load(&dir.join("nope.so"), &model, 1).err().unwrap();
        assert!(err.to_string().contains("TFL3"), "{err}");
        let err = Model::load(&dir.join("nope.so"), &dir.join("absent.tflite"), 1).err().unwrap();
        assert!(matches!(err, ModelError::ModelFile { .. }), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
