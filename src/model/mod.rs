//! The pure core: what the lab is — settings and their layers, the stack, the plan and the step
//! names it lists, the rendered manifests and their templates, kinds, the lab CA's material and
//! where the engine image comes from. No I/O beyond what it is handed (files it is pointed at,
//! the clock for certificates).

pub mod assets;
pub mod demand;
pub mod engine_image;
pub mod image_ref;
pub mod kinds;
pub mod plan;
pub mod render;
pub mod settings;
pub mod stack;
pub mod templates;
pub mod tls;
