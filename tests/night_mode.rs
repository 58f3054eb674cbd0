//! Day and night on real frames: the repo's fixture photographs (tests/fixtures/frames, CC BY 4.0, see its
//! ATTRIBUTION.md) are colour pictures; converted to grey (as an IR/night camera delivers them, through a JPEG
//! round trip) they are grey frames. Through the appliance's vision stage (`detect::Vision`: detector, temporal
//! confirmation and the day/night gate), the grey versions of fire pictures never give vision evidence, in RGB
//! and in YUYV, while their colour originals do.

use std::path::Path;
use std::time::Duration;

use ember_edge::camera::jpeg::JpegDecoder;
use ember_edge::config::DetectorKind;
use ember_edge::detect::night::{self, Mode};
use ember_edge::detect::{Detector, Vision};
use ember_edge::frame::{FramePool, PixelFormat};
use ember_edge::pixels::{load_rgb, rgb_to_yuyv_in_place};

const FIRE: [&str; 5] = [
    "rf-fire8_img_417_be4ce5.jpg",
    "rf-indoorfire_classk11_mp4-107_6e6650.jpg",
    "rf-indoorfire_image415_68a572.jpg",
    "rf-indoorfire_image453_0b89e4.jpg",
    "rf-indoorfire_image557_b666b1.jpg",
];

fn fixture(name: &str) -> (Vec<u8>, usize, usize) {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames").join(name)).unwrap();
    let mut rgb = Vec::new();
    let (w, h) = load_rgb(&mut JpegDecoder::new(), &bytes, &mut rgb).unwrap();
    (rgb, w, h)
}

/// The picture as a grey camera delivers it: BT.601 luma, JPEG-encoded (as one grey channel or as RGB with
/// equal channels, both seen from IR cameras) and decoded again by the cameras' decoder.
fn grey(rgb: &[u8], w: usize, h: usize, one_channel: bool) -> Vec<u8> {
    let luma: Vec<u8> = rgb
        .chunks(3)
        .map(|p| ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]) + 128) >> 8) as u8)
        .collect();
    let mut jpeg = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut jpeg, 85);
    if one_channel {
        enc.encode(&luma, w as u16, h as u16, jpeg_encoder::ColorType::Luma).unwrap();
    } else {
        let spread: Vec<u8> = luma.iter().flat_map(|&y| [y, y, y]).collect();
        enc.encode(&spread, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(load_rgb(&mut JpegDecoder::new(), &jpeg, &mut out).unwrap(), (w, h));
    out
}

/// Plays `pictures` in turn for `frames` frames at 5 fps through a fresh vision stage; returns each frame's
/// (confirmed score, grey, mode).
fn play(pictures: &[(Vec<u8>, usize, usize)], yuyv: bool, frames: usize) -> Vec<(f32, bool, Mode)> {
    let mut vision = Vision::from(Detector::new(DetectorKind::Grid, &[]));
    let len = pictures.iter().map(|p| p.0.len()).max().unwrap();
    let pool = FramePool::new(1, len);
    let t0 = tokio::time::Instant::now();
    (0..frames)
        .map(|k| {
            let (rgb, w, h) = &pictures[k % pictures.len()];
            let mut f = pool.take().unwrap();
            f.buffer_mut()[..rgb.len()].copy_from_slice(rgb);
            f.meta.height = *h;
            if yuyv {
                f.meta.width = rgb_to_yuyv_in_place(f.buffer_mut(), *w, *h);
                f.meta.format = PixelFormat::Yuyv;
            } else {
                f.meta.width = *w;
                f.meta.format = PixelFormat::Rgb24;
            }
            f.meta.seq = k as u64;
            let a = vision.analyse(&f, t0 + Duration::from_millis(200 * k as u64)).unwrap();
            (a.scored.score, a.grey, a.mode)
        })
        .collect()
}

#[test]
fn every_fixture_photograph_is_colour_and_its_grey_version_is_grey() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 8);
    for n in &names {
        let (rgb, w, h) = fixture(n);
        assert!(!night::is_grey(&rgb, w, h, PixelFormat::Rgb24), "{n} is a colour picture");
        for one_channel in [true, false] {
            let g = grey(&rgb, w, h, one_channel);
            assert!(night::is_grey(&g, w, h, PixelFormat::Rgb24), "{n} in grey (one channel: {one_channel})");
            let mut yuyv = g.clone();
            let yw = rgb_to_yuyv_in_place(&mut yuyv, w, h);
            assert!(night::is_grey(&yuyv, yw, h, PixelFormat::Yuyv), "{n} in grey YUYV");
        }
    }
}

#[test]
fn grey_fire_pictures_never_raise_vision_evidence_while_their_colour_originals_do() {
    let threshold = ember_edge::detect::grid_weights::THRESHOLD;
    let colour: Vec<_> = FIRE.iter().map(|n| fixture(n)).collect();
    let greys: Vec<_> =
        colour.iter().enumerate().map(|(i, (rgb, w, h))| (grey(rgb, *w, *h, i % 2 == 0), *w, *h)).collect();
    for yuyv in [false, true] {
        // The colour originals in turn move like fire (the cells change from picture to picture): confirmed.
        let day = play(&colour, yuyv, 30);
        assert!(day.iter().all(|f| !f.1 && f.2 == Mode::Day), "yuyv {yuyv}");
        assert!(day.iter().any(|f| f.0 >= threshold), "yuyv {yuyv}: the colour fire is confirmed: {day:?}");

        let night = play(&greys, yuyv, 30);
        assert!(night.iter().all(|f| f.1), "yuyv {yuyv}: every frame is grey");
        assert!(night.iter().all(|f| f.0 == 0.0), "yuyv {yuyv}: no vision evidence from grey frames: {night:?}");
        let first_night = night.iter().position(|f| f.2 == Mode::Night).unwrap();
        assert_eq!(first_night, night::ENTER_NIGHT as usize - 1, "night after {} grey frames", night::ENTER_NIGHT);
        assert!(night[first_night..].iter().all(|f| f.2 == Mode::Night), "no flapping");
    }
}

#[test]
fn after_night_the_colour_fire_must_confirm_afresh() {
    let threshold = ember_edge::detect::grid_weights::THRESHOLD;
    let colour: Vec<_> = FIRE.iter().map(|n| fixture(n)).collect();
    let greys: Vec<_> = colour.iter().map(|(rgb, w, h)| (grey(rgb, *w, *h, true), *w, *h)).collect();
    // Ten grey frames (night), then colour again: the first LEAVE_NIGHT - 1 colour frames are still withheld
    // and day returns on the next; only then can the fire confirm, from fresh evidence.
    let mut seq: Vec<(Vec<u8>, usize, usize)> = Vec::new();
    seq.extend(greys.iter().cycle().take(10).cloned());
    seq.extend(colour.iter().cycle().take(20).cloned());
    let out = play(&seq, false, seq.len());
    let day_again = 10 + night::LEAVE_NIGHT as usize - 1;
    assert!(out[..day_again].iter().all(|f| f.0 == 0.0), "{out:?}");
    assert_eq!(out[day_again].2, Mode::Day);
    assert!(out[day_again..].iter().any(|f| f.0 >= threshold), "{out:?}");
}
