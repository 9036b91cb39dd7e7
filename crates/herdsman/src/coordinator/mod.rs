//! The Coordinator: the whole stack built from one configuration.
//!
//! Each layer works alone, but an application wants all of them, in the
//! right order, sharing one classification of requests, one set of stats
//! and one set of switches. [`Coordinator::builder`] takes the environment
//! and the [`Config`](crate::config::Config) (endpoint classes included) and
//! builds the shared state of every layer; [`Coordinator::layer`] is the
//! tower layer that puts them around an inner service.

mod builder;
mod error;
mod handle;
mod layer;
mod route;
mod service;
pub mod stack;

pub use self::{
    builder::CoordinatorBuilder,
    error::BuildError,
    handle::Coordinator,
    layer::CoordinatorLayer,
    route::{CallerIdentity, ClassKey, ClassOf},
    service::{Coordinated, ResponseFuture},
};
