//! `nvr-edge household ...`: manage members and vehicles and try matches from the shell.
//! Every command prints JSON on stdout. Bad input is refused before anything is written,
//! with exit status 2. Enrolment's checks are the household's own (`household::enrol`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use image::RgbImage;
use serde_json::json;

use nvr_edge::clock::SystemClock;
use nvr_edge::config::Config;
use nvr_edge::household::enrol::{self, EnrolError, EnrolFace};
use nvr_edge::household::vectors::{read_vector_file, VectorFileError};
use nvr_edge::household::{Household, HouseholdError, NewVehicle, Role, Schedule, VehicleProbe};
use nvr_edge::inference::identity::face::FaceObserver;
use nvr_edge::inference::identity::ModelError;

#[derive(Debug, Subcommand)]
pub enum HouseholdCmd {
    /// Enrol a household member.
    AddMember {
        #[arg(long)]
        name: String,
        /// resident, family, service_worker or frequent_visitor
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        notes: String,
        /// When the member is expected, e.g. "mon-fri 08:00-17:00" (repeatable).
        #[arg(long)]
        schedule: Vec<String>,
    },
    /// List members (with embedding counts) and vehicles.
    List,
    /// Remove a member with their schedules and embeddings.
    Remove {
        #[arg(long)]
        member: i64,
    },
    /// Store a person embedding for a member.
    AddEmbedding {
        #[arg(long)]
        member: i64,
        /// Embedding model id (the embedder's sha256 for real models).
        #[arg(long)]
        model_id: String,
        /// Raw little-endian f32, or a .npy file of float32/float64.
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "cli")]
        source: String,
    },
    /// Register a vehicle by plate and/or visual embedding.
    AddVehicle {
        #[arg(long)]
        plate: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        trusted: bool,
        #[arg(long = "type")]
        vehicle_type: Option<String>,
        #[arg(long)]
        color: Option<String>,
        #[arg(long)]
        member: Option<i64>,
        #[command(flatten)]
        embedding: OptEmbedding,
    },
    /// Remove a vehicle.
    RemoveVehicle {
        #[arg(long)]
        vehicle: i64,
    },
    /// Match a person embedding against the household.
    Match {
        #[arg(long)]
        model_id: String,
        #[arg(long)]
        file: PathBuf,
        /// Also list the best N members.
        #[arg(long)]
        top_k: Option<usize>,
    },
    /// Enrol a member from photos: find the face, align it, embed it with the face model
    /// and store it. With --not, the photos show someone who must never be taken for the
    /// member (negative enrolment). Every photo is checked before anything is stored.
    Enroll {
        /// The member the photos show.
        #[arg(long, required_unless_present = "not", conflicts_with = "not")]
        member: Option<i64>,
        /// The member the photos must never match.
        #[arg(long = "not")]
        not: Option<i64>,
        /// Photo (JPEG or PNG); repeatable.
        #[arg(long, required = true)]
        image: Vec<PathBuf>,
        /// Which face, counted from the left, when a photo shows several.
        #[arg(long)]
        face: Option<usize>,
    },
    /// Find the faces in a photo and match each against the household.
    Identify {
        #[arg(long)]
        image: PathBuf,
    },
    /// Match a vehicle by plate and/or visual embedding.
    MatchVehicle {
        #[arg(long)]
        plate: Option<String>,
        #[arg(long = "type")]
        vehicle_type: Option<String>,
        #[arg(long)]
        color: Option<String>,
        #[command(flatten)]
        embedding: OptEmbedding,
    },
}

#[derive(Debug, Args)]
pub struct OptEmbedding {
    /// Model id of --file's embedding.
    #[arg(long, requires = "file")]
    model_id: Option<String>,
    /// Embedding file (raw f32 or .npy).
    #[arg(long, requires = "model_id")]
    file: Option<PathBuf>,
}

impl OptEmbedding {
    fn load(&self) -> Result<Option<(String, Vec<f32>)>, CliError> {
        match (&self.model_id, &self.file) {
            (Some(m), Some(f)) => Ok(Some((m.clone(), read_vector_file(f)?))),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Household(#[from] HouseholdError),
    #[error(transparent)]
    Enrol(#[from] EnrolError),
    #[error(transparent)]
    File(#[from] VectorFileError),
    #[error("{0}")]
    Usage(String),
    /// The face models are not available (exit 1: not the input's fault).
    #[error("face models")]
    Models(#[from] ModelError),
}

impl CliError {
    /// Exit status: 2 when the input was at fault, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Household(e) if !e.is_input_error() => 1,
            CliError::Enrol(e) if !e.is_input_error() => 1,
            CliError::Models(_) => 1,
            _ => 2,
        }
    }
}

/// Run one household command; returns the JSON to print.
pub fn run(cmd: &HouseholdCmd, cfg: &Config) -> Result<serde_json::Value, CliError> {
    // Parse every argument before touching the database.
    let parsed_embedding = match cmd {
        HouseholdCmd::AddEmbedding { file, .. } => Some(read_vector_file(file)?),
        _ => None,
    };
    let enrolment = match cmd {
        HouseholdCmd::Enroll { image, face, .. } => Some(faces_for_enrolment(cfg, image, *face)?),
        _ => None,
    };
    let hh = Household::open_in(
        &cfg.storage.data_dir,
        cfg.household.clone(),
        Arc::new(SystemClock),
    )?;
    Ok(match cmd {
        HouseholdCmd::AddMember {
            name,
            role,
            notes,
            schedule,
        } => {
            let role: Role = role.parse().map_err(CliError::Usage)?;
            let schedules: Vec<Schedule> = schedule
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()
                .map_err(CliError::Usage)?;
            json!({ "member_id": hh.add_member(name, role, notes, &schedules)? })
        }
        HouseholdCmd::List => json!({ "members": hh.members()?, "vehicles": hh.vehicles()? }),
        HouseholdCmd::Remove { member } => {
            hh.remove_member(*member)?;
            json!({ "removed_member": member })
        }
        HouseholdCmd::AddEmbedding {
            member,
            model_id,
            source,
            ..
        } => {
            let v = parsed_embedding.unwrap_or_default();
            json!({ "embedding_id": hh.add_embedding(*member, model_id, &v, source)?, "dim": v.len() })
        }
        HouseholdCmd::AddVehicle {
            plate,
            description,
            trusted,
            vehicle_type,
            color,
            member,
            embedding,
        } => {
            let v = NewVehicle {
                description: description.clone(),
                plate: plate.clone(),
                vehicle_type: vehicle_type.clone(),
                color: color.clone(),
                trusted: *trusted,
                member_id: *member,
                embedding: embedding.load()?,
            };
            json!({ "vehicle_id": hh.add_vehicle(&v)? })
        }
        HouseholdCmd::RemoveVehicle { vehicle } => {
            hh.remove_vehicle(*vehicle)?;
            json!({ "removed_vehicle": vehicle })
        }
        HouseholdCmd::Match {
            model_id,
            file,
            top_k,
        } => {
            let probe = read_vector_file(file)?;
            let outcome = hh.match_person(&probe, Some(model_id));
            let mut out = serde_json::to_value(&outcome).unwrap_or_default();
            if let Some(k) = top_k {
                out["top_k"] = match hh.top_k(&probe, Some(model_id), *k) {
                    Ok(c) => serde_json::to_value(c).unwrap_or_default(),
                    Err(_) => json!([]),
                };
            }
            out
        }
        HouseholdCmd::Enroll { member, not, .. } => {
            let (model_id, faces) = enrolment.unwrap_or_default();
            let negative = not.is_some();
            let target = member.or(*not).unwrap_or_default();
            let stored = enrol::store_enrolment(&hh, target, negative, &model_id, &faces)?;
            json!({ "member_id": target, "negative": negative, "model_id": model_id, "stored": stored })
        }
        HouseholdCmd::Identify { image } => {
            let faces = enrol::identify(&observer(cfg)?, &hh, &read_image(image)?)?;
            json!({ "image": image, "faces": faces })
        }
        HouseholdCmd::MatchVehicle {
            plate,
            vehicle_type,
            color,
            embedding,
        } => {
            let emb = embedding.load()?;
            if plate.is_none() && emb.is_none() {
                return Err(CliError::Usage(
                    "give --plate and/or --model-id with --file".into(),
                ));
            }
            let probe = VehicleProbe {
                plate: plate.as_deref(),
                embedding: emb.as_ref().map(|(m, e)| (m.as_str(), e.as_slice())),
                vehicle_type: vehicle_type.as_deref(),
                color: color.as_deref(),
            };
            serde_json::to_value(hh.match_vehicle(probe)).unwrap_or_default()
        }
    })
}

fn observer(cfg: &Config) -> Result<FaceObserver, CliError> {
    Ok(FaceObserver::for_photos(&cfg.identity)?)
}

fn read_image(path: &Path) -> Result<RgbImage, CliError> {
    // Regular files of a bounded size and pixel count only (see fsio).
    nvr_edge::fsio::read_image(path)
        .map(|i| i.to_rgb8())
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// One face per photo, checked and embedded; any photo that does not give exactly one
/// usable face refuses the whole enrolment, saying which and why.
fn faces_for_enrolment(
    cfg: &Config,
    images: &[PathBuf],
    pick: Option<usize>,
) -> Result<(String, Vec<EnrolFace>), CliError> {
    let obs = observer(cfg)?;
    let mut out = Vec::new();
    for path in images {
        let shown = path.display().to_string();
        let name = path
            .file_name()
            .map_or(shown.clone(), |n| n.to_string_lossy().into_owned());
        let img = read_image(path)?;
        out.push(enrol::face_for_enrolment(&obs, &img, pick, &shown, &name)?);
    }
    Ok((obs.embedder.model_id(), out))
}
